"""Hard limits on user-supplied work (CLI and service share them; README lists them)."""

MAX_K = 1000  # results per query (`search -k`, the service's `k`)
MAX_QUERY_CHARS = 4096  # characters in one query, before tokenising (the model keeps ~50 tokens)
MAX_QUERIES_PER_REQUEST = 256  # queries in one service request
MAX_RESULTS_PER_REQUEST = 25_600  # queries x k in one service request (256 x 100, 25 x 1000)
MAX_QUERIES_FILE_BYTES = 16 * 1024 * 1024  # `search --queries-file`
MAX_QUERIES_FILE_LINES = 100_000
MIN_SEGMENT_SECONDS = 0.1  # shortest segment window or stride (`index --segment-seconds`)
# largest object (s3://, gs://, https://) copied to a temporary file for decoding
MAX_SPOOL_BYTES = 64 * 2**30
MAX_OFFSET = 10_000  # `search --offset`: pages reach this deep
MAX_TERMS = 16  # texts + examples + negatives in one query
MAX_MOMENTS = 100  # `search --moments`: spans per file
