"""dashboard: event branding and privacy text, resumable upload sessions, sign-in sessions

Revision ID: 0011
Revises: 0010
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('brand_colour', sa.String(length=7), nullable=True))
        batch_op.add_column(sa.Column('logo_key', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('privacy_controller', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('privacy_retention', sa.String(length=300), nullable=True))
    op.create_table(
        'upload_sessions',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('event_id', sa.String(length=32), nullable=False),
        sa.Column('filename', sa.String(length=500), nullable=False),
        sa.Column('size_bytes', sa.BigInteger(), nullable=False),
        sa.Column('received_bytes', sa.BigInteger(), nullable=False),
        sa.Column('chunks', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('result', sa.JSON(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['event_id'], ['events.id'], name=op.f('fk_upload_sessions_event_id_events'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_upload_sessions')),
    )
    op.create_index(op.f('ix_upload_sessions_event_id_status'), 'upload_sessions', ['event_id', 'status'])
    op.create_table(
        'dashboard_sessions',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('user_id', sa.String(length=32), nullable=False),
        sa.Column('secret_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_dashboard_sessions_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dashboard_sessions')),
    )
    op.create_index(op.f('ix_dashboard_sessions_user_id'), 'dashboard_sessions', ['user_id'])


def downgrade() -> None:
    op.drop_index(op.f('ix_dashboard_sessions_user_id'), table_name='dashboard_sessions')
    op.drop_table('dashboard_sessions')
    op.drop_index(op.f('ix_upload_sessions_event_id_status'), table_name='upload_sessions')
    op.drop_table('upload_sessions')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('privacy_retention')
        batch_op.drop_column('privacy_controller')
        batch_op.drop_column('logo_key')
        batch_op.drop_column('brand_colour')
