#!/usr/bin/env bash
# rustdoc that checks the error code of `compile_fail,E....` doctests (stable rustdoc ignores
# the code, so a snippet that fails for another reason would pass): the doctest of
# `zx_app::http_function!` must fail with E0599, a handler calling a method its port lacks.
# Only this rustdoc process sees RUSTC_BOOTSTRAP; no crate is built with it.
RUSTC_BOOTSTRAP=1 exec rustdoc "$@"
