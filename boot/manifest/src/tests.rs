//! The manifest checks, from the text to the errors each mistake gets.

use super::*;

fn check(text: &str) -> Result<Manifest> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.wasm"), b"\0asm").expect("write");
    std::fs::create_dir_all(dir.path().join("comps/hello")).expect("mkdir");
    std::fs::write(dir.path().join("comps/hello/Cargo.toml"), "").expect("write");
    parse(text, &dir.path().join("system.toml"), &dir.path().join("comps"))
}

fn err(text: &str) -> String {
    format!("{:#}", check(text).expect_err("refused"))
}

/// Three components granted IPC, and `extra` lines at the top.
fn ipc_system(connect: &str) -> String {
    let mut text = format!("connect = [{connect}]\n");
    for name in ["client", "kv", "other"] {
        text += &format!("[[component]]\nname = \"{name}\"\nwasm = \"a.wasm\"\ngrants = [\"mica:kernel/ipc\"]\n");
    }
    text += "[[component]]\nname = \"plain\"\nwasm = \"a.wasm\"\nhandles = 8\ncreate_channels = true\n";
    text
}

#[test]
fn connections_are_checked() {
    let m = check(&ipc_system(
        r#"{ from = "client", to = "kv", name = "kv" }, { from = "other", to = "kv", name = "kv" }"#,
    ))
    .expect("two clients of one service");
    assert_eq!(m.connections.len(), 2);
    assert_eq!(m.components[0].handles, DEFAULT_HANDLES);
    assert_eq!((m.components[3].handles, m.components[3].create_channels), (8, true));
    let cases = [
        (r#"{ from = "client", to = "db", name = "kv" }"#, "to: no component is named \"db\""),
        (r#"{ from = "plain", to = "kv", name = "kv" }"#, "from: component \"plain\" is not granted mica:kernel/ipc"),
        (r#"{ from = "kv", to = "kv", name = "kv" }"#, "a component cannot connect to itself"),
        (r#"{ from = "client", to = "kv", name = "Kv" }"#, "name: must match"),
        (
            r#"{ from = "client", to = "kv", name = "kv" }, { from = "client", to = "kv", name = "kv" }"#,
            "this connection is given twice",
        ),
        (
            r#"{ from = "client", to = "kv", name = "kv" }, { from = "client", to = "other", name = "kv" }"#,
            "component \"client\" already has a connection named \"kv\" (client -> kv)",
        ),
        (
            r#"{ from = "client", to = "kv", name = "kv" }, { from = "kv", to = "other", name = "kv" }"#,
            "component \"kv\" already has a connection named \"kv\"",
        ),
        (r#"{ from = "client", to = "kv" }"#, "missing field `name`"),
    ];
    for (connect, expected) in cases {
        let e = err(&ipc_system(connect));
        assert!(e.contains(expected), "{connect}: {e}");
    }
    let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\npriority = \"urgent\"\n");
    assert!(
        e.contains("component 'x': priority: unknown variant `urgent`, expected one of `high`, `normal`, `low`"),
        "{e}"
    );
    let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\nhandles = 0\n");
    assert!(e.contains("component 'x': handles: 0 is out of range: give 1 to 4096"), "{e}");
}

#[test]
fn full_entry() {
    let m = check(
        r#"
        [[component]]
        name = "hello"
        crate = "hello"
        args = ["a", "b"]
        env = { K = "V" }
        memory_limit = "16MiB"
        cpu_time_limit = "250ms"
        restart = "on-failure"
        priority = "high"
        grants = ["wasi:cli", "wasi:io/streams"]

        [[component]]
        name = "second-1"
        wasm = "a.wasm"
        fuel = 1000
        "#,
    )
    .expect("valid");
    let c = &m.components[0];
    assert_eq!(c.source, Source::Crate("hello".into()));
    assert_eq!(c.memory_limit, 16 << 20);
    assert_eq!(c.cpu_time_limit_ms, Some(250));
    assert_eq!(c.env, vec![("K".into(), "V".into())]);
    assert_eq!(c.restart, mica_bundle::Restart::OnFailure);
    assert_eq!((c.priority, m.components[1].priority), (mica_bundle::Priority::High, mica_bundle::Priority::Normal));
    assert_eq!(m.components[1].fuel, Some(1000));
    assert_eq!(m.components[1].memory_limit, DEFAULT_MEMORY_LIMIT);
}

#[test]
fn errors_name_file_component_and_key() {
    let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\ncolour = \"red\"\n");
    assert!(e.contains("system.toml") && e.contains("unknown field `colour`"), "{e}");
    let e = err("[[component]]\nname = \"x\"\nwasm = \"missing.wasm\"\n");
    assert!(e.contains("component 'x': wasm:") && e.contains("missing.wasm does not exist"), "{e}");
    let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\nmemory_limit = \"12 parsecs\"\n");
    assert!(e.contains("component 'x': memory_limit:"), "{e}");
    let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\nfuel = 5\ncpu_time_limit = \"1s\"\n");
    assert!(e.contains("component 'x': fuel: give `fuel` or `cpu_time_limit`, not both"), "{e}");
    let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\ncpu_time_limit = \"soon\"\n");
    assert!(e.contains("cpu_time_limit:"), "{e}");
    let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\nrestart = \"sometimes\"\n");
    assert!(
        e.contains(
            "component 'x': restart: unknown variant `sometimes`, expected one of `never`, `on-failure`, `always`"
        ),
        "{e}"
    );
    let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\ngrants = [\"wasi:http/types\"]\n");
    assert!(e.contains("component 'x': grants: \"wasi:http/types\" is not an interface"), "{e}");
    let e = err("[[component]]\nname = \"Bad_Name\"\nwasm = \"a.wasm\"\n");
    assert!(e.contains("component 'Bad_Name': name:"), "{e}");
    let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n");
    assert!(e.contains("another component has this name"), "{e}");
    let e = err("[[component]]\nname = \"x\"\ncrate = \"nope\"\n");
    assert!(e.contains("crate: no component crate nope in"), "{e}");
    let e = err("[[component]]\nname = \"x\"\n");
    assert!(e.contains("wasm: missing"), "{e}");
    let e = err("");
    assert!(e.contains("no [[component]] entries"), "{e}");
    let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\naot = true\nstart = \"pulley\"\n");
    assert!(e.contains("component 'x': aot = true and start = \"pulley\" contradict"), "{e}");
}

#[test]
fn the_module_store_is_compiled_ahead_of_time_unless_it_starts_on_pulley() {
    let store = |start: &str| {
        let text = format!(
            "[[component]]\nname = \"s\"\nwasm = \"a.wasm\"\nmodule_store = true\ngrants = [\"mica:kernel/ipc\"]\n{start}"
        );
        let m = check(&text).expect("valid");
        (m.components[0].aot, m.components[0].pulley_first)
    };
    assert_eq!(store(""), (true, false));
    assert_eq!(store("start = \"pulley\"\n"), (false, true));
}

#[test]
fn mica_interfaces_can_be_granted() {
    for grant in ["mica:kernel/log", "mica:kernel/ipc", "mica:kernel", "mica"] {
        let m = check(&format!("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\ngrants = [\"{grant}\"]\n"))
            .unwrap_or_else(|e| panic!("{grant}: {e:#}"));
        assert_eq!(m.components[0].grants, [grant]);
    }
    let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\ngrants = [\"mica:kernel/caps\"]\n");
    assert!(e.contains("\"mica:kernel/caps\" is not an interface") && e.contains("mica:kernel/ipc"), "{e}");
}

#[test]
fn the_repository_system_manifests_are_valid() {
    // boot/manifest: two levels below the repository's root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("the repository's root");
    let mut manifests = [
        "default.toml",
        "ipc.toml",
        "drivers.toml",
        "net.toml",
        "services.toml",
        "bench.toml",
        "bench-ipc.toml",
        "bench-io.toml",
    ]
    .map(|m| root.join("components").join(m))
    .to_vec();
    let systems = root.join("qemu-tests").join("systems");
    for entry in std::fs::read_dir(&systems).expect("qemu-tests/systems") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "toml") {
            manifests.push(path);
        }
    }
    for path in &manifests {
        load(path, &root.join("components")).unwrap_or_else(|e| panic!("{e:#}"));
    }
    let nostd = load(&systems.join("nostd.toml"), &root.join("components")).expect("valid");
    assert_eq!(nostd.components[0].grants, ["mica:kernel/log"]);
}

#[test]
fn devices_are_checked() {
    let machine = "[[device]]\nkind = \"virtio-rng\"\n[[device]]\nkind = \"virtio-blk\"\nsize = \"1MiB\"\n\
                   [[device]]\nkind = \"virtio-blk\"\ndisk = \"d.img\"\nread_only = true\n";
    let driver = |devices: &str, grants: &str| {
        format!(
            "{machine}[[component]]\nname = \"drv\"\nwasm = \"a.wasm\"\ndevices = [{devices}]\ngrants = [{grants}]\n"
        )
    };
    let m = check(&driver("\"virtio-blk.1\", \"virtio-rng.0\"", "\"mica:hw\"")).expect("valid");
    let names: Vec<&str> = m.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["virtio-rng.0", "virtio-blk.0", "virtio-blk.1"]);
    assert_eq!(m.devices[1].disk_size, 1 << 20);
    assert_eq!(m.devices[0].disk_size, DEFAULT_DISK_SIZE);
    assert!(m.devices[2].read_only && m.devices[2].disk.as_ref().is_some_and(|d| d.ends_with("d.img")));
    assert_eq!(m.components[0].devices, ["virtio-blk.1", "virtio-rng.0"]);
    assert_eq!(m.components[0].dma_limit, DEFAULT_DMA_LIMIT);

    let e = err(&driver("\"virtio-net.0\"", "\"mica:hw\""));
    assert!(e.contains("component 'drv': devices: \"virtio-net.0\" is not a device of this manifest's machine (its [[device]] entries: virtio-rng.0, virtio-blk.0, virtio-blk.1)"), "{e}");
    let e = err(&driver("\"virtio-rng.0\"", "\"wasi\""));
    assert!(e.contains("component 'drv': devices: claiming a device needs the grant \"mica:hw\""), "{e}");
    let twice = driver("\"virtio-rng.0\"", "\"mica\"")
        + "[[component]]\nname = \"two\"\nwasm = \"a.wasm\"\ndevices = [\"virtio-rng.0\"]\ngrants = [\"mica\"]\n";
    let e = err(&twice);
    assert!(e.contains("component 'two': devices: \"virtio-rng.0\" is already granted to component 'drv'"), "{e}");
    let e = err("[[device]]\nkind = \"virtio-gpu\"\n[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n");
    assert!(
        e.contains(
            "device 1 (virtio-gpu): kind: unknown variant `virtio-gpu`, \
             expected one of `virtio-blk`, `virtio-rng`, `virtio-net`, `virtio-console`"
        ),
        "{e}"
    );
    let e = err("[[device]]\nkind = \"virtio-rng\"\ndisk = \"x\"\n[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n");
    assert!(
        e.contains("device 1 (virtio-rng): disk: `disk`, `size` and `read_only` are for virtio-blk devices only"),
        "{e}"
    );
    let e = err("[[device]]\nkind = \"virtio-blk\"\nsize = 1000\n[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n");
    assert!(e.contains("size: 1000 bytes is not a positive multiple of 512"), "{e}");
    let e = err(
        "[[device]]\nkind = \"virtio-net\"\nhostfwd = [\"8080:80\"]\n[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n",
    );
    assert!(e.contains("hostfwd: \"8080:80\": expected QEMU's form"), "{e}");
    let e =
        err("[[device]]\nkind = \"virtio-rng\"\noutput = \"o.log\"\n[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n");
    assert!(e.contains("device 1 (virtio-rng): output: `output` is for virtio-console devices only"), "{e}");
    let m = check(
        "[[device]]\nkind = \"virtio-console\"\noutput = \"o.log\"\n[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\n",
    )
    .expect("valid");
    assert!(m.devices[0].output.as_ref().is_some_and(|o| o.ends_with("o.log")), "{:?}", m.devices[0]);
    assert_eq!(m.devices[0].name, "virtio-console.0");
    let e = err("[[component]]\nname = \"x\"\nwasm = \"a.wasm\"\ndma_limit = \"lots\"\n");
    assert!(e.contains("component 'x': dma_limit:"), "{e}");
}

#[test]
fn c_sources_are_a_third_kind_of_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("hello-c")).expect("mkdir");
    std::fs::write(dir.path().join("hello-c/main.c"), "int main(void) { return 0; }\n").expect("write");
    std::fs::create_dir_all(dir.path().join("empty")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("comps")).expect("mkdir");
    let parse_here = |text: &str| parse(text, &dir.path().join("system.toml"), &dir.path().join("comps"));
    let m = parse_here("[[component]]\nname = \"hc\"\nc = \"hello-c\"\n").expect("a directory of C sources");
    let Source::C(path) = &m.components[0].source else { panic!("not a C source: {:?}", m.components[0].source) };
    assert!(path.ends_with("hello-c") && path.is_absolute(), "{}", path.display());
    let cases = [
        ("c = \"empty\"", "is not a directory with .c files"),
        ("c = \"nowhere\"", "is not a directory with .c files"),
        ("c = \"hello-c\"\ncrate = \"hello\"", "give one of `wasm`, `crate` and `c`, not several"),
        ("args = []", "`c = \"directory of C sources\"`"),
    ];
    for (source, expected) in cases {
        let text = format!("[[component]]\nname = \"hc\"\n{source}\n");
        let e = format!("{:#}", parse_here(&text).expect_err("refused"));
        assert!(e.contains(expected), "{source}: {e}");
    }
}

/// A service `server` (granted IPC) and a client `app` granted `grants` and given the manifest
/// line `client_line`, connected by `connect`.
fn service_and_client(server: &str, connect: &str, grants: &str, client_line: &str) -> String {
    format!(
        "connect = [{connect}]\n[[component]]\nname = \"{server}\"\nwasm = \"a.wasm\"\n\
         grants = [\"wasi\", \"mica:kernel/ipc\"]\n\
         [[component]]\nname = \"app\"\nwasm = \"a.wasm\"\ngrants = [{grants}]\n{client_line}\n"
    )
}

/// A network stack `net` and a client `app` with `network = NETWORK`, connected by `connect`.
fn network_system(connect: &str, grants: &str, network: &str) -> String {
    service_and_client("net", connect, grants, &format!("network = {network}"))
}

#[test]
fn the_network_is_granted_over_a_connection_without_ipc_of_its_own() {
    let sockets = r#"{ from = "app", to = "net", name = "sockets" }"#;
    let m = check(&network_system(sockets, "\"wasi\"", r#"{ connection = "sockets", listen = [7, 8080] }"#))
        .expect("network over `sockets`");
    assert_eq!(
        m.components[1].network,
        Some(mica_bundle::NetworkGrant { connection: "sockets".into(), listen: vec![7, 8080], hosts: Vec::new() })
    );
    let hosts = r#"{ connection = "sockets", hosts = { "DB.example" = "10.0.2.2", gw = "fe80::1" } }"#;
    let m = check(&network_system(sockets, "\"wasi\"", hosts)).expect("hosts");
    assert_eq!(
        m.components[1].network.as_ref().map(|n| n.hosts.clone()),
        Some(vec![("db.example".into(), "10.0.2.2".into()), ("gw".into(), "fe80::1".into())])
    );
    assert_eq!(m.components[0].network, None);
    // A client that only connects lists no ports.
    let m = check(&network_system(sockets, "\"wasi:sockets\", \"wasi:cli\"", r#"{ connection = "sockets" }"#))
        .expect("a client");
    assert_eq!(m.components[1].network.as_ref().map(|n| n.listen.len()), Some(0));
    let cases = [
        (
            sockets,
            "\"wasi:cli\"",
            r#"{ connection = "sockets" }"#,
            "network: the network needs the grant \"wasi:sockets\"",
        ),
        (sockets, "\"wasi\"", r#"{ connection = "sockets", listen = [0] }"#, "port 0 is not a port to listen on"),
        (sockets, "\"wasi\"", r#"{ connection = "sockets", listen = [7, 7] }"#, "port 7 is given twice"),
        (sockets, "\"wasi\"", r#"{ connection = "sockets", listen = [70000] }"#, "70000"),
        (sockets, "\"wasi\"", r#"{ listen = [7] }"#, "missing field `connection`"),
        (sockets, "\"wasi\"", r#"{ connection = "sockets", hosts = { db = "db.local" } }"#, "is not an IP address"),
        (sockets, "\"wasi\"", r#"{ connection = "sockets", hosts = { "a b" = "10.0.2.2" } }"#, "is not a host name"),
        (sockets, "\"wasi\"", r#"{ connection = "sockets", hosts = { localhost = "10.0.2.2" } }"#, "not localhost"),
        (
            sockets,
            "\"wasi\"",
            r#"{ connection = "sockets", hosts = { "10.0.0.1" = "10.0.2.2" } }"#,
            "is not a host name",
        ),
        (
            sockets,
            "\"wasi\"",
            r#"{ connection = "sockets", hosts = { db = "10.0.2.2", DB = "10.0.2.3" } }"#,
            "\"db\" is given twice",
        ),
        (sockets, "\"wasi\"", r#"{ connection = "sockets", ports = [7] }"#, "unknown field `ports`"),
        (
            sockets,
            "\"wasi\", \"mica:kernel/ipc\"",
            r#"{ connection = "other" }"#,
            "network: the network stack is reached over connection \"other\", but no `connect` entry gives it one",
        ),
    ];
    for (connect, grants, network, expected) in cases {
        let e = err(&network_system(connect, grants, network));
        assert!(e.contains(expected), "{network}: {e}");
    }
}

/// A file system service `fs` and a client `app` with `dirs`, connected by `connect`.
fn dirs_system(connect: &str, grants: &str, dirs: &str) -> String {
    service_and_client("fs", connect, grants, &format!("dirs = [{dirs}]"))
}

#[test]
fn directories_are_granted_over_a_connection_without_ipc_of_their_own() {
    let files = r#"{ from = "app", to = "fs", name = "files" }"#;
    let data = r#"{ path = "/data", connection = "files" }, { path = "/ro", connection = "files", read_only = true }"#;
    let m = check(&dirs_system(files, "\"wasi\"", data)).expect("dirs over `files`");
    let expected = [
        mica_bundle::DirGrant { path: "/data".into(), connection: "files".into(), read_only: false },
        mica_bundle::DirGrant { path: "/ro".into(), connection: "files".into(), read_only: true },
    ];
    assert_eq!(m.components[1].dirs, expected);
    // The volume as the program's root directory (what the WASI test suite asks for).
    let m = check(&dirs_system(files, "\"wasi\"", r#"{ path = "/", connection = "files" }"#)).expect("dirs at /");
    assert_eq!(m.components[1].dirs[0].path, "/");
    let cases = [
        (files, "\"wasi:cli\"", data, "dirs: directories need the grant \"wasi:filesystem\""),
        (files, "\"wasi\"", r#"{ path = "data", connection = "files" }"#, "path \"data\": give an absolute path"),
        (files, "\"wasi\"", r#"{ path = "/a/../b", connection = "files" }"#, "without `.`, `..` or `//`"),
        (files, "\"wasi\"", r#"{ path = "/d/", connection = "files" }"#, "path \"/d/\": give an absolute path"),
        (files, "\"wasi\"", r#"{ path = "", connection = "files" }"#, "path \"\": give an absolute path"),
        (
            files,
            "\"wasi\"",
            r#"{ path = "/d", connection = "files" }, { path = "/d", connection = "files" }"#,
            "path \"/d\" is given twice",
        ),
        (
            files,
            "\"wasi\", \"mica:kernel/ipc\"",
            r#"{ path = "/d", connection = "other" }"#,
            "dirs: \"/d\" is served over connection \"other\", but no `connect` entry gives it one",
        ),
        (files, "\"wasi\"", r#"{ path = "/d" }"#, "missing field `connection`"),
        // A connection that serves no directory of its client still needs IPC.
        (r#"{ from = "app", to = "fs", name = "kv" }"#, "\"wasi\"", "", "from: component \"app\" is not granted"),
    ];
    for (connect, grants, dirs, expected) in cases {
        let e = err(&dirs_system(connect, grants, dirs));
        assert!(e.contains(expected), "{dirs}: {e}");
    }
}
