//! Wire types of the admin API (SPEC §6), shared so daemon and `envelopectl` agree.
