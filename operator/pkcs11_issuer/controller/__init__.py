"""The operator: kopf handlers that reconcile Issuers and Certificates, and their metrics."""
