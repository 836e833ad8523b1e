//! Integration tests of the `shmq` command (in progress).
