"""privacy: event retention, excluded faces, purgeable templates and similarities, consent record

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retention_days', sa.Integer(), server_default='90', nullable=False))
        batch_op.add_column(sa.Column('biometrics_purged_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('faces', schema=None) as batch_op:
        batch_op.add_column(sa.Column('excluded_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.alter_column('embedding', existing_type=sa.LargeBinary(), nullable=True)
    with op.batch_alter_table('matches', schema=None) as batch_op:
        batch_op.alter_column('similarity', existing_type=sa.Float(), nullable=True)
    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.add_column(sa.Column('consent_version', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('consent_source', sa.String(length=10), nullable=True))
        batch_op.drop_column('selfie_key')  # never set: selfies are not stored


def downgrade() -> None:
    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.add_column(sa.Column('selfie_key', sa.String(length=300), nullable=True))
        batch_op.drop_column('consent_source')
        batch_op.drop_column('consent_version')
    with op.batch_alter_table('matches', schema=None) as batch_op:
        batch_op.alter_column('similarity', existing_type=sa.Float(), nullable=False)
    with op.batch_alter_table('faces', schema=None) as batch_op:
        batch_op.alter_column('embedding', existing_type=sa.LargeBinary(), nullable=False)
        batch_op.drop_column('excluded_at')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('biometrics_purged_at')
        batch_op.drop_column('retention_days')
