// Builds the etcd server binary. Its main package lives in go.etcd.io/etcd/v3, whose go.mod
// replaces every sibling module with a relative path, so it cannot be built as a dependency;
// main.go here makes the same single call.
// scripts/k8s-binaries.sh rewrites the version when ETCD_VERSION overrides the pin.
module pkcs11-issuer.dev/k8s-build/etcd

// etcd's server module asks for this Go version; the main module's go line sets GODEBUG defaults.
go 1.26.0

require go.etcd.io/etcd/server/v3 v3.5.35
