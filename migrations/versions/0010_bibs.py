"""bib numbers: bib_reads, match source, bib-only matches, start-list runners, event setting

Revision ID: 0010
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'bib_reads',
        sa.Column('photo_id', sa.String(length=32), nullable=False),
        sa.Column('event_id', sa.String(length=32), nullable=False),
        sa.Column('face_id', sa.String(length=32), nullable=True),
        sa.Column('number', sa.String(length=6), nullable=False),
        sa.Column('x1', sa.Float(), nullable=False),
        sa.Column('y1', sa.Float(), nullable=False),
        sa.Column('x2', sa.Float(), nullable=False),
        sa.Column('y2', sa.Float(), nullable=False),
        sa.Column('score', sa.Float(), nullable=False),
        sa.Column('text_px', sa.Float(), nullable=False),
        sa.Column('model_id', sa.String(length=100), nullable=False),
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_bib_reads_event_id_events'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['face_id'], ['faces.id'], name=op.f('fk_bib_reads_face_id_faces'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['photo_id'], ['photos.id'], name=op.f('fk_bib_reads_photo_id_photos'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_bib_reads')),
    )
    op.create_index(op.f('ix_bib_reads_event_id_number'), 'bib_reads', ['event_id', 'number'], unique=False)
    op.create_index(op.f('ix_bib_reads_photo_id'), 'bib_reads', ['photo_id'], unique=False)
    op.create_index(op.f('ix_bib_reads_face_id'), 'bib_reads', ['face_id'], unique=False)
    with op.batch_alter_table('matches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=10), nullable=False, server_default='face'))
        batch_op.alter_column('face_id', existing_type=sa.String(length=32), nullable=True)
        batch_op.alter_column('similarity', existing_type=sa.Float(), nullable=True)
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bib_search_public', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.add_column(sa.Column('from_start_list', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.alter_column('email', existing_type=sa.String(length=320), nullable=True)
        batch_op.create_index(batch_op.f('ix_runners_event_id_bib'), ['event_id', 'bib'], unique=False)


def downgrade() -> None:
    op.execute("DELETE FROM matches WHERE face_id IS NULL")
    op.execute("DELETE FROM runners WHERE email IS NULL")
    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_runners_event_id_bib'))
        batch_op.alter_column('email', existing_type=sa.String(length=320), nullable=False)
        batch_op.drop_column('from_start_list')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('bib_search_public')
    with op.batch_alter_table('matches', schema=None) as batch_op:
        batch_op.alter_column('similarity', existing_type=sa.Float(), nullable=False)
        batch_op.alter_column('face_id', existing_type=sa.String(length=32), nullable=False)
        batch_op.drop_column('source')
    op.drop_index(op.f('ix_bib_reads_face_id'), table_name='bib_reads')
    op.drop_index(op.f('ix_bib_reads_photo_id'), table_name='bib_reads')
    op.drop_index(op.f('ix_bib_reads_event_id_number'), table_name='bib_reads')
    op.drop_table('bib_reads')
