"""The `pkcs11-issuer` command line: the operator itself and the tools around an HSM."""
