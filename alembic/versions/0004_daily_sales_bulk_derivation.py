"""daily_sales without the per-row foreign key on sku

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 04:30:00.000000

fk_daily_sales_sku_products made every derived or loaded daily_sales row run a trigger that looks
its SKU up in products (and locks it): 365,000 lookups for a year of 1,000 SKUs. Ingestion checks
every SKU of a sales or order file against products inside the load's own transaction and rejects
unknown ones, and products are never deleted, so the check is done once per file as a set
operation instead (the same reasoning as 0003 for order_lines).
"""
from collections.abc import Sequence

from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('daily_sales', schema=None) as batch_op:
        batch_op.drop_constraint('fk_daily_sales_sku_products', type_='foreignkey')


def downgrade() -> None:
    with op.batch_alter_table('daily_sales', schema=None) as batch_op:
        batch_op.create_foreign_key(
            'fk_daily_sales_sku_products', 'products', ['sku'], ['sku']
        )
