"""order_lines for bulk loads: no duplicate sku index, no per-row FK check, "C" keys on PostgreSQL

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 01:50:00.000000

- ix_order_lines_sku duplicated the leading column of ix_order_lines_sku_sale_date.
- fk_order_lines_sku_products: ingestion rejects order lines of unknown SKUs inside the load's
  own transaction and products are never deleted, so the per-row check cost time for nothing.
- On PostgreSQL the text keys compare bytewise (COLLATE "C"): cheaper index inserts and sorts.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TEXT_KEYS = (('order_id', 64), ('sku', 64), ('customer_id', 64), ('status', 16))


def _postgresql() -> bool:
    return op.get_bind().dialect.name == 'postgresql'


def upgrade() -> None:
    with op.batch_alter_table('order_lines', schema=None) as batch_op:
        batch_op.drop_constraint('fk_order_lines_sku_products', type_='foreignkey')
        batch_op.drop_index('ix_order_lines_sku')
    if _postgresql():
        for name, length in _TEXT_KEYS:
            op.alter_column(
                'order_lines',
                name,
                existing_type=sa.String(length=length),
                type_=postgresql.VARCHAR(length=length, collation='C'),
                existing_nullable=name == 'customer_id',
            )


def downgrade() -> None:
    if _postgresql():
        for name, length in _TEXT_KEYS:
            op.alter_column(
                'order_lines',
                name,
                existing_type=postgresql.VARCHAR(length=length, collation='C'),
                type_=sa.String(length=length),
                existing_nullable=name == 'customer_id',
            )
    with op.batch_alter_table('order_lines', schema=None) as batch_op:
        batch_op.create_index('ix_order_lines_sku', ['sku'], unique=False)
        batch_op.create_foreign_key(
            'fk_order_lines_sku_products', 'products', ['sku'], ['sku']
        )
