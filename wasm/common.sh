# Shared by the wasm/build-*.sh scripts (sourced): the compiler, its flags, and the embedding step.
# Needs (Debian): clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32.
cc=${CC:-clang-14}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# wasm_link OUT.wasm CFLAGS... SOURCES...: one optimised, self-contained module (no WASI imports,
# no entry point, only the functions the shim exports).
wasm_link() {
  out=$1
  shift
  # shellcheck disable=SC2068
  $cc --target=wasm32-wasi --sysroot=/usr -isystem /usr/include/wasm32-wasi -O2 -DNDEBUG \
    -mbulk-memory -mnontrapping-fptoint -msign-ext -ffunction-sections -fdata-sections \
    -nostartfiles -L/usr/lib/wasm32-wasi -Wl,--no-entry -Wl,--gc-sections -Wl,--strip-all \
    -Wl,-z,stack-size=262144 -Wl,--initial-memory=4194304 -fuse-ld=lld -o "$out" $@
}

# wasm_embed IN.wasm NAME "LIBRARY VERSION (PART" MODULE.ts: the TypeScript module holding it as base64.
wasm_embed() {
  node "$here/embed.mjs" "$1" "$2" "$3, clang $($cc -dumpversion))" > "$here/../src/fs/squashfs/comp/$4"
}
