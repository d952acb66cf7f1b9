"""order_lines.customer_id: ids stored in clear before ingestion pseudonymised them

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 09:00:00.000000

From this version on, ingestion stores customer ids only as keyed pseudonyms
(featurestore.pseudonyms, docs/operations.md Privacy). Ids an older version stored in clear are
pseudonymised here with SALESFC_CUSTOMER_ID_KEY when it is set, and cleared otherwise: the
store must not keep them in clear, and forecasting never reads them (reloading the order exports
with a key gives their lines pseudonyms again). Pseudonyms cannot be turned back into ids, so the
downgrade changes nothing.
"""
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from featurestore.config import get_settings
from featurestore.pseudonyms import Pseudonymiser

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 10_000


def upgrade() -> None:
    conn = op.get_bind()
    pseudonyms = Pseudonymiser.from_settings(get_settings())
    if pseudonyms is None:
        conn.execute(sa.text('UPDATE order_lines SET customer_id = NULL'))
        return
    ids = conn.execute(
        sa.text('SELECT DISTINCT customer_id FROM order_lines WHERE customer_id IS NOT NULL')
    ).scalars().all()
    if not ids:
        return
    # A mapping table and one UPDATE: customer_id has no index, so one UPDATE per id would
    # scan the lines once per customer.
    mapping = sa.table('_customer_pseudonyms', sa.column('clear'), sa.column('pseudonym'))
    op.create_table(
        '_customer_pseudonyms',
        sa.Column('clear', sa.String(64), primary_key=True),
        sa.Column('pseudonym', sa.String(64), nullable=False),
    )
    for lo in range(0, len(ids), _BATCH):
        rows = [{'clear': c, 'pseudonym': pseudonyms.pseudonym(c)} for c in ids[lo : lo + _BATCH]]
        conn.execute(sa.insert(mapping), rows)
    conn.execute(
        sa.text(
            'UPDATE order_lines SET customer_id = (SELECT m.pseudonym FROM _customer_pseudonyms m '
            'WHERE m.clear = order_lines.customer_id) WHERE customer_id IS NOT NULL'
        )
    )
    op.drop_table('_customer_pseudonyms')


def downgrade() -> None:
    pass
