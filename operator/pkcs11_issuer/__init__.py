"""pkcs11-issuer: cert-manager style issuance with every private key kept inside a PKCS#11 HSM."""

__version__ = "0.1.0"
