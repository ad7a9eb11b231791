"""A store's failure worded for the user: what the client said, and for an object store that
refused or found no credentials, how to give them."""

# How botocore and s3fs word a request the store refused for its credentials, or one sent
# without any.
_CREDENTIAL_PROBLEMS = ("NoCredentialsError", "PartialCredentialsError", "Unable to locate credentials",
                        "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "AccessDenied",
                        "Access Denied", "Forbidden", "InvalidToken")
CREDENTIALS_HINT = ("give the object store's credentials as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                    "AWS_PROFILE, or an instance role) in the environment of the driver and of every node, or set "
                    "storage.anonymous: true for a public bucket")


def store_problem(error: BaseException, url: str) -> str:
    """"<type>: <message>" of a failure at `url`, with how to give credentials when an object
    store refused them or found none."""
    text = f"{type(error).__name__}: {error}"
    if url.startswith(("s3://", "s3a://")) and any(words in text for words in _CREDENTIAL_PROBLEMS):
        return f"{text}; {CREDENTIALS_HINT}"
    return text
