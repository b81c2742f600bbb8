//! Unit tests of the consensus module: parsing edge cases, fork selection, networks.
