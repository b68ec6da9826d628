"""indexes for matching, paging and the sweeper; photo face counts; runner-set version, rematch progress

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

UNMATCHED = "matched_at IS NULL AND embedding IS NOT NULL"
WAITING = "status IN ('pending', 'processing')"
EXCLUDED = "excluded_at IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('runners_version', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('rematch_total', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('rematch_done', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('rematch_cursor', sa.String(length=40), nullable=True))
    with op.batch_alter_table('photos', schema=None) as batch_op:
        batch_op.add_column(sa.Column('face_count', sa.Integer(), server_default='0', nullable=False))
        batch_op.create_index(batch_op.f('ix_photos_event_id_id'), ['event_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_photos_event_id_status_id'), ['event_id', 'status', 'id'], unique=False)
        batch_op.create_index('ix_photos_waiting', ['queued_at'], unique=False,
                              postgresql_where=sa.text(WAITING), sqlite_where=sa.text(WAITING))
    op.execute("UPDATE photos SET face_count = (SELECT count(*) FROM faces WHERE faces.photo_id = photos.id)")
    with op.batch_alter_table('faces', schema=None) as batch_op:
        # the face matrix's "excluded since the last sync" (app/services/face_matrix.py): a few rows
        batch_op.create_index('ix_faces_excluded', ['event_id', 'excluded_at'], unique=False,
                              postgresql_where=sa.text(EXCLUDED), sqlite_where=sa.text(EXCLUDED))
    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_runners_event_id_model_id'), ['event_id', 'model_id'], unique=False)
        batch_op.create_index('ix_runners_unmatched', ['created_at'], unique=False,
                              postgresql_where=sa.text(UNMATCHED), sqlite_where=sa.text(UNMATCHED))
    with op.batch_alter_table('matches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_matches_photo_id'), ['photo_id'], unique=False)
    with op.batch_alter_table('match_rejections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_match_rejections_photo_id'), ['photo_id'], unique=False)
    with op.batch_alter_table('delivered_photos', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_delivered_photos_photo_id'), ['photo_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_delivered_photos_delivery_id'), ['delivery_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('delivered_photos', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_delivered_photos_delivery_id'))
        batch_op.drop_index(batch_op.f('ix_delivered_photos_photo_id'))
    with op.batch_alter_table('match_rejections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_match_rejections_photo_id'))
    with op.batch_alter_table('matches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_matches_photo_id'))
    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.drop_index('ix_runners_unmatched')
        batch_op.drop_index(batch_op.f('ix_runners_event_id_model_id'))
    with op.batch_alter_table('faces', schema=None) as batch_op:
        batch_op.drop_index('ix_faces_excluded')
    with op.batch_alter_table('photos', schema=None) as batch_op:
        batch_op.drop_index('ix_photos_waiting')
        batch_op.drop_index(batch_op.f('ix_photos_event_id_status_id'))
        batch_op.drop_index(batch_op.f('ix_photos_event_id_id'))
        batch_op.drop_column('face_count')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('rematch_cursor')
        batch_op.drop_column('rematch_done')
        batch_op.drop_column('rematch_total')
        batch_op.drop_column('runners_version')
