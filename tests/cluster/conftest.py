"""The cluster tier's fixtures (`cluster_binaries`, `control_plane`, `namespace`) live in
support/cluster_fixtures.py, shared with the container tier."""
