"""The wire format both sides share: job and message Structs, coded errors, list queries and
the password hash. The broker imports it from here, so it is defined once."""
