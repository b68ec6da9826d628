"""photos(event_id, processed_at): the face matrix's sync reads the photos processed since its last one

Revision ID: 0014
Revises: 0013
"""
from alembic import op


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # without it each sync (one per new runner and per moved bib link) filtered every photo of
    # the event: 22 ms at 55k photos (bench/scale.py --start-list)
    with op.batch_alter_table('photos', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_photos_event_id_processed_at'), ['event_id', 'processed_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('photos', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_photos_event_id_processed_at'))
