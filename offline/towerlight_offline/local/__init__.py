"""Local stand-ins for AWS services: moto's server for S3/SQS, an embedded Postgres."""
