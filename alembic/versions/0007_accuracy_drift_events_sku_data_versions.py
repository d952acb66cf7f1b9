"""live accuracy of forecast runs, drift events, per-SKU data versions of pushed orders

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 10:37:18.552886
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('drift_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('model_version', sa.String(length=128), nullable=True),
    sa.Column('job_id', sa.String(length=36), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_drift_events'))
    )
    with op.batch_alter_table('drift_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_drift_events_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_drift_events_kind'), ['kind'], unique=False)

    op.create_table('sku_data_versions',
    sa.Column('sku', sa.String(length=64).with_variant(sa.VARCHAR(length=64, collation='C'), 'postgresql'), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sku', name=op.f('pk_sku_data_versions'))
    )
    with op.batch_alter_table('sku_data_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sku_data_versions_changed_at'), ['changed_at'], unique=False)

    op.create_table('accuracy_days',
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('date', sa.Date(), nullable=False),
    sa.Column('model_version', sa.String(length=128), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('actual', sa.Float(), nullable=False),
    sa.Column('abs_error', sa.Float(), nullable=False),
    sa.Column('error', sa.Float(), nullable=False),
    sa.Column('naive_abs_error', sa.Float(), nullable=False),
    sa.Column('naive_error', sa.Float(), nullable=False),
    sa.Column('inside', sa.Integer(), nullable=False),
    sa.Column('interval_rows', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['forecast_runs.run_id'], name=op.f('fk_accuracy_days_run_id_forecast_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'date', name=op.f('pk_accuracy_days'))
    )
    with op.batch_alter_table('accuracy_days', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_accuracy_days_date'), ['date'], unique=False)

    op.create_table('accuracy_scores',
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('segment', sa.String(length=64), nullable=False),
    sa.Column('model_version', sa.String(length=128), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('days', sa.Integer(), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('actual_units', sa.Float(), nullable=False),
    sa.Column('wape', sa.Float(), nullable=True),
    sa.Column('rmsse', sa.Float(), nullable=True),
    sa.Column('bias', sa.Float(), nullable=True),
    sa.Column('mae', sa.Float(), nullable=True),
    sa.Column('coverage', sa.Float(), nullable=True),
    sa.Column('naive_wape', sa.Float(), nullable=True),
    sa.Column('naive_rmsse', sa.Float(), nullable=True),
    sa.Column('naive_bias', sa.Float(), nullable=True),
    sa.Column('naive_mae', sa.Float(), nullable=True),
    sa.Column('scored_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['forecast_runs.run_id'], name=op.f('fk_accuracy_scores_run_id_forecast_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('run_id', 'level', 'segment', name=op.f('pk_accuracy_scores'))
    )


def downgrade() -> None:
    op.drop_table('accuracy_scores')
    with op.batch_alter_table('accuracy_days', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_accuracy_days_date'))

    op.drop_table('accuracy_days')
    with op.batch_alter_table('sku_data_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sku_data_versions_changed_at'))

    op.drop_table('sku_data_versions')
    with op.batch_alter_table('drift_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_drift_events_kind'))
        batch_op.drop_index(batch_op.f('ix_drift_events_at'))

    op.drop_table('drift_events')
