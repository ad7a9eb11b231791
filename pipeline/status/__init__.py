"""`status`: what a job's output holds, sharded or not: which parts are complete, rows in and
out, ids missing and ids written twice, rows with errors by kind (`audit`)."""
