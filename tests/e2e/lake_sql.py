"""Answers SQL over a local lake with readers we did not write: each Delta table opened by the
`deltalake` package, queried by duckdb. Prints the rows as CSV without a header, for a test to
compare with what `paystream query` answers.

Usage: lake_sql.py LAKE_DIR SQL
"""

import csv
import os
import sys

import duckdb
from deltalake import DeltaTable


def main():
    lake, sql = sys.argv[1], sys.argv[2]
    con = duckdb.connect()
    for name in sorted(os.listdir(lake)):
        path = os.path.join(lake, name)
        if os.path.isdir(os.path.join(path, "_delta_log")):
            con.register(name, DeltaTable(path).to_pyarrow_dataset())
    out = csv.writer(sys.stdout, lineterminator="\n")
    for row in con.sql(sql).fetchall():
        out.writerow(["" if v is None else v for v in row])


if __name__ == "__main__":
    main()
