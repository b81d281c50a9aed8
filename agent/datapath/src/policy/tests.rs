//! Table tests of the policy compiler.
