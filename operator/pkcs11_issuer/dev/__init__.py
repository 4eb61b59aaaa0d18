"""Development and test scaffolding: a throw-away SoftHSM token, a p11-kit server, a local
Kubernetes control plane. Never imported by the operator at run time."""
