//! Gives the shared library the soname it is installed under, so programs linked
//! against `libustrace.so` load that file whatever the build called it.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libustrace.so");
}
