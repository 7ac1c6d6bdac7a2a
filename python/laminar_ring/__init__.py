"""Arrow RecordBatches between processes through laminar-ring's shared-memory
rings: pyarrow, polars and DuckDB data in, ``pyarrow.RecordBatch`` out,
zero-copy.

    import laminar_ring
    with laminar_ring.Producer("trades") as tx:
        tx.send(table)                 # pyarrow, polars, DuckDB, nanoarrow
    for batch in laminar_ring.Consumer("trades"):
        print(batch.num_rows)          # buffers in shared memory
"""

from ._laminar_ring import (
    Closed,
    Consumer,
    ConsumerGone,
    PeerGone,
    Producer,
    ProducerFailed,
    RingError,
    SchemaMismatch,
    create,
    info,
    ls,
    rm,
)

__all__ = [
    "Closed",
    "Consumer",
    "ConsumerGone",
    "PeerGone",
    "Producer",
    "ProducerFailed",
    "RingError",
    "SchemaMismatch",
    "create",
    "info",
    "ls",
    "rm",
]
