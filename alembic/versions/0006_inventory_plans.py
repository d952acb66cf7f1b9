"""inventory plans: nightly (R, S) plans per SKU, visible once complete

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 08:40:00.000000

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('inventory_plans',
    sa.Column('plan_id', sa.String(length=36), nullable=False),
    sa.Column('model_version', sa.String(length=128), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('data_token', sa.String(length=64), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('rows', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('plan_id', name=op.f('pk_inventory_plans'))
    )
    op.create_table('inventory_plan_rows',
    sa.Column('plan_id', sa.String(length=36), nullable=False),
    sa.Column('sku', sa.String(length=64), nullable=False),
    sa.Column('lead_time_days', sa.Integer(), nullable=False),
    sa.Column('review_days', sa.Integer(), nullable=False),
    sa.Column('service_level', sa.Float(), nullable=False),
    sa.Column('mean', sa.Float(), nullable=False),
    sa.Column('safety_stock', sa.Float(), nullable=False),
    sa.Column('reorder_point', sa.Float(), nullable=False),
    sa.Column('order_up_to', sa.Float(), nullable=False),
    sa.Column('cold_start', sa.Boolean(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['plan_id'], ['inventory_plans.plan_id'], name=op.f('fk_inventory_plan_rows_plan_id_inventory_plans'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('plan_id', 'sku', name=op.f('pk_inventory_plan_rows'))
    )


def downgrade() -> None:
    op.drop_table('inventory_plan_rows')
    op.drop_table('inventory_plans')
