//! The C ABI (see include/shmq.h). Filled in by the C ABI work.
