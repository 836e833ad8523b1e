//! The committed C header is what cbindgen generates from src/ffi.rs now, its version
//! macros match Cargo.toml, and it compiles as C11 and C++17.
//!
//! To regenerate the header after changing src/ffi.rs: `scripts/gen-header.sh` (which runs
//! this test with `SHMQ_UPDATE_HEADER=1`). Nothing else writes include/shmq.h.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    root().join("include/shmq.h")
}

/// The header as cbindgen (the pinned dev-dependency) generates it now.
fn generate() -> String {
    let config = cbindgen::Config::from_file(root().join("cbindgen.toml")).expect("cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        // cbindgen cannot emit string constants; the text version comes from Cargo.toml.
        .with_after_include(format!(
            "\n/* The version of shmq this header belongs to (compare with shmq_version()). */\n\
             #define SHMQ_VERSION \"{}\"",
            env!("CARGO_PKG_VERSION")
        ))
        .with_src(root().join("src/ffi.rs"))
        .generate()
        .expect("cbindgen failed on src/ffi.rs")
        .write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn committed_header_is_current() {
    let generated = generate();
    if std::env::var_os("SHMQ_UPDATE_HEADER").is_some() {
        std::fs::write(header_path(), &generated).expect("write include/shmq.h");
        eprintln!("wrote {}", header_path().display());
        return;
    }
    let committed = std::fs::read_to_string(header_path()).unwrap_or_default();
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "include/shmq.h is stale (first difference at line {}):\n  committed: {:?}\n  generated: {:?}\n\
             Run scripts/gen-header.sh and commit the header.",
            first + 1,
            committed.lines().nth(first).unwrap_or("<end of file>"),
            generated.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

/// The value of `#define NAME value` in the committed header.
fn define(header: &str, name: &str) -> String {
    header
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("#define ")?.trim();
            let (n, v) = rest.split_once(char::is_whitespace)?;
            (n == name).then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("include/shmq.h has no #define {name}"))
}

#[test]
fn version_macros_match_cargo_toml() {
    let header = std::fs::read_to_string(header_path()).expect("read include/shmq.h");
    // Read Cargo.toml itself rather than trusting CARGO_PKG_VERSION alone.
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let version = manifest
        .lines()
        .find_map(|l| {
            let v = l.strip_prefix("version")?.trim().strip_prefix('=')?.trim();
            Some(v.trim_matches('"').to_string())
        })
        .expect("version in Cargo.toml");
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let parts: Vec<&str> = version.split('.').collect();
    assert_eq!(define(&header, "SHMQ_VERSION"), format!("\"{version}\""));
    for (macro_name, part) in [
        ("SHMQ_VERSION_MAJOR", parts[0]),
        ("SHMQ_VERSION_MINOR", parts[1]),
        ("SHMQ_VERSION_PATCH", parts[2]),
    ] {
        let value = define(&header, macro_name);
        let value = value.trim_end_matches(['u', 'U']);
        assert_eq!(value, part, "{macro_name}");
    }
    // And the library reports the same version at run time.
    // SAFETY: shmq_version returns static NUL-terminated text.
    let runtime = unsafe { std::ffi::CStr::from_ptr(shmq::ffi::shmq_version()) };
    assert_eq!(runtime.to_str().unwrap(), version);
}

/// Compiles a translation unit that includes the header and uses every declaration kind,
/// with `compiler` and `flags`.
fn compile(compiler: &str, flags: &[&str], ext: &str) {
    let dir = std::env::temp_dir().join(format!("shmq-header-{}-{ext}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("use_header.{ext}"));
    std::fs::write(
        &src,
        "#include \"shmq.h\"\n\
         #include \"shmq.h\" /* the include guard works */\n\
         int use_header(void);\n\
         int use_header(void) {\n\
             shmq_queue *q = NULL;\n\
             shmq_status s = shmq_connect(\"x\", &q);\n\
             shmq_message_info info = {0, 0, 0, 0};\n\
             shmq_queue_stats stats;\n\
             stats.struct_size = (uint32_t)sizeof stats;\n\
             (void)info; (void)shmq_stats(q, &stats);\n\
             (void)shmq_status_str(s);\n\
             return (int)s + (int)SHMQ_VERSION_MAJOR + (int)SHMQ_CREATE_REPLACE\n\
                 + (int)SHMQ_MESSAGE_REDELIVERED + (SHMQ_VERSION[0] != 0);\n\
         }\n",
    )
    .unwrap();
    let output = Command::new(compiler)
        .args(flags)
        .arg("-I")
        .arg(root().join("include"))
        .args(["-c", "-o"])
        .arg(dir.join("use_header.o"))
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "{compiler} {flags:?} rejected include/shmq.h:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn header_compiles_as_c11() {
    compile(
        "gcc",
        &["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"],
        "c",
    );
}

#[test]
fn header_compiles_as_cpp17() {
    compile(
        "g++",
        &["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic"],
        "cpp",
    );
}

/// Compiles `body` (inside `void f(shmq::Queue &q)`) against include/shmq.hpp as C++17 with
/// the project's flags; returns the compiler's diagnostics if it failed.
fn compile_cpp_use(body: &str) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!(
        "shmq-hpp-{}-{:x}",
        std::process::id(),
        body.len() * 31 + body.bytes().map(usize::from).sum::<usize>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("use.cpp");
    std::fs::write(
        &src,
        format!(
            "#include <shmq.hpp>\n#include <string>\n#include <vector>\n\
             using namespace std::chrono_literals;\n\
             void f(shmq::Queue &q) {{\n{body}\n}}\n"
        ),
    )
    .unwrap();
    let output = Command::new("g++")
        .args([
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
        ])
        .arg("-I")
        .arg(root().join("include"))
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run g++: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Misuse the C++ interface refuses at compile time, each next to the correct use.
#[test]
fn cpp_header_refuses_misuse_at_compile_time() {
    let cases = [
        // A C-style integer timeout after a literal would be a length.
        (
            r#"q.send("text", shmq::no_wait);"#,
            r#"q.send("text", 0);"#,
            "deleted",
        ),
        // A batch read returning a C-style int would mean the opposite of a bool.
        (
            "q.receive_batch_in_place(8, [](const uint8_t *, size_t, const shmq::Received &) \
             { return true; });",
            "q.receive_batch_in_place(8, [](const uint8_t *, size_t, const shmq::Received &) \
             { return 0; });",
            "returns void or bool",
        ),
        // Elements made on the fly would be gone before the batch is sent.
        (
            "std::vector<std::string> m{\"a\"}; q.send_batch(m);",
            "struct R { struct I { int i; std::string operator*() const { return \"a\"; } \
             I &operator++() { ++i; return *this; } bool operator!=(const I &o) const \
             { return i != o.i; } }; I begin() const { return {0}; } I end() const \
             { return {1}; } }; q.send_batch(R{});",
            "must yield references",
        ),
        // A fill returns a length, not a flag.
        (
            "q.send_in_place([](uint8_t *, size_t) { return size_t{0}; });",
            "q.send_in_place([](uint8_t *, size_t) { return true; });",
            "returns the message length",
        ),
    ];
    for (good, bad, why) in cases {
        if let Err(e) = compile_cpp_use(good) {
            panic!("the correct use `{good}` did not compile:\n{e}");
        }
        match compile_cpp_use(bad) {
            Ok(()) => panic!("`{bad}` compiled; shmq.hpp should refuse it"),
            Err(e) => assert!(e.contains(why), "`{bad}` failed, but not for `{why}`:\n{e}"),
        }
    }
}
