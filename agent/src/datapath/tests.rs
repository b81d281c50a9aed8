//! Privileged BPF_PROG_TEST_RUN tests (filled in next).
