"""What the tests share: the repo root, subprocess environments, study repos and files, an S3 server."""
