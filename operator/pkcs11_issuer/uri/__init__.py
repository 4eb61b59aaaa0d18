"""RFC 7512 `pkcs11:` URIs: strict parsing, canonical formatting, a builder. Pure, no I/O.

    >>> uri = parse("pkcs11:token=CA;object=root%20key;type=private")
    >>> uri.token, uri.object, uri.type
    ('CA', 'root key', 'private')
    >>> Pkcs11Uri.build(token="CA", id=b"\\x01").format()
    'pkcs11:token=CA;id=%01'

Whether a URI is *allowed* (pin-value, module-path and module-name in a custom resource) is
policy, decided above this layer; here a URI is only valid or not.
"""

from pkcs11_issuer.uri._errors import UriError
from pkcs11_issuer.uri._model import (
    OBJECT_TYPES,
    PATH_ATTRIBUTES,
    QUERY_ATTRIBUTES,
    Attribute,
    ObjectType,
    Pkcs11Uri,
)
from pkcs11_issuer.uri._parse import parse

__all__ = [
    "OBJECT_TYPES",
    "PATH_ATTRIBUTES",
    "QUERY_ATTRIBUTES",
    "Attribute",
    "ObjectType",
    "Pkcs11Uri",
    "UriError",
    "parse",
]
