"""Reads an exported file with readers we did not write (pyarrow for Parquet, duckdb for CSV and
JSON lines), from a local path or an s3:// URI (boto3, with the AWS_* variables of the test's
moto server), and prints its rows as CSV without a header, in the file's order, for the test to
compare with what `paystream query` answers.

Usage: read_export.py PATH_OR_URI FORMAT   (FORMAT: csv, json or parquet)
"""

import csv
import os
import sys
import tempfile

import duckdb
import pyarrow.parquet as pq


def local_copy(uri, folder):
    if not uri.startswith("s3://"):
        return uri
    import boto3

    bucket, key = uri[len("s3://") :].split("/", 1)
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )
    path = os.path.join(folder, os.path.basename(key))
    s3.download_file(bucket, key, path)
    return path


def rows(path, fmt):
    if fmt == "parquet":
        table = pq.read_table(path)
        return [list(r.values()) for r in table.to_pylist()]
    con = duckdb.connect()
    if fmt == "csv":
        rel = con.sql(f"SELECT * FROM read_csv('{path}', header=true, all_varchar=true)")
    else:
        rel = con.sql(f"SELECT * FROM read_json('{path}', format='newline_delimited')")
    return [list(r) for r in rel.fetchall()]


def main():
    uri, fmt = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as folder:
        out = csv.writer(sys.stdout, lineterminator="\n")
        for r in rows(local_copy(uri, folder), fmt):
            out.writerow(["" if v is None else v for v in r])


if __name__ == "__main__":
    main()
