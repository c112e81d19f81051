//! Build script shared by every package that links libtorch (`build =
//! "../train/link-libtorch.rs"`): it bakes libtorch's directory into the run
//! path so the binaries start without LD_LIBRARY_PATH, and keeps libtorch_cuda
//! linked (the linker's --as-needed would drop it, since no Rust code names a
//! CUDA symbol, and CUDA would then be "not available" at run time).
//! A package with more to do in its build script includes it as a module
//! (`#[path = "../train/link-libtorch.rs"] mod link_libtorch;`) and calls
//! `link_libtorch::main()`.

pub fn main() {
    // torch-sys (`links = "tch"`) exports the directory it linked against.
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
