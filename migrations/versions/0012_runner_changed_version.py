"""runners.changed_version: the event's runners_version when the row last changed (incremental runner cache)

Revision ID: 0012
Revises: 0011
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # existing rows read 0: every worker starts with an empty cache, which loads them in full
    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.add_column(sa.Column('changed_version', sa.Integer(), server_default='0', nullable=False))
        batch_op.create_index(batch_op.f('ix_runners_event_id_changed_version'), ['event_id', 'changed_version'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_runners_event_id_changed_version'))
        batch_op.drop_column('changed_version')
