"""runner matched_at

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 06:33:54.933568
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.add_column(sa.Column('matched_at', sa.DateTime(timezone=True), nullable=True))
    # runners enrolled before this migration were matched when they enrolled
    op.execute("UPDATE runners SET matched_at = created_at WHERE embedding IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.drop_column('matched_at')

