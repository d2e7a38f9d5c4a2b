//! What a container is in the pod VM: its root file system copied into the guest, its OCI
//! mounts made there, and its process, all derived from the bundle's OCI spec.
//!
//! Guest layout: `/run/mica/containers/<id>/rootfs` is the container's root, and
//! `/run/mica/volumes/<hash>` holds the copy of a bind mount's source, one per source path in a
//! pod VM, so that the containers of a pod that mount the same volume share it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{Mount, Spec};

use crate::guest::Command;

/// Where containers live in the guest.
pub const GUEST_ROOT: &str = "/run/mica/containers";
/// Where bind mounts' sources are copied in the guest.
pub const VOLUMES: &str = "/run/mica/volumes";

/// The guest directory that holds the copy of host path `source`.
pub fn volume_dir(source: &Path) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(source.as_os_str().as_encoded_bytes());
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{VOLUMES}/{hex}")
}

/// A bind mount's source, copied into the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    /// The host file or directory.
    pub host: PathBuf,
    /// Where the copy goes in the guest (a directory; a file's copy is `<guest>/file`).
    pub guest: String,
}

/// A container's plan: what the shim does in the guest to create it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// `/run/mica/containers/<id>`.
    pub dir: String,
    /// Its root in the guest.
    pub rootfs: String,
    /// Bind mount sources to copy in (unless the pod VM has them already), before `setup` runs.
    pub copies: Vec<Copy>,
    /// A shell script that makes the mounts (run as root in the guest, `set -e`).
    pub setup: String,
    /// A shell script that undoes them and removes the container's files.
    pub teardown: String,
    /// What was left out, for the shim's log (cgroup mounts: the guest has no cgroup tree per
    /// container).
    pub skipped: Vec<String>,
}

/// Quotes `s` for the shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The `-o` options `mount` gets for `m`: those a Linux mount understands, without the bind and
/// propagation flags the shim handles itself.
fn options(m: &Mount) -> Vec<String> {
    const DROPPED: [&str; 10] =
        ["bind", "rbind", "private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable"];
    m.options()
        .iter()
        .flatten()
        .filter(|o| !DROPPED.contains(&o.as_str()))
        .filter(|o| !o.is_empty() && !o.contains([' ', '\'', '"']))
        .cloned()
        .collect()
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind") || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind")
}

/// The plan for container `id` with OCI `spec`.
pub fn plan(id: &str, spec: &Spec) -> Result<Plan> {
    let dir = format!("{GUEST_ROOT}/{id}");
    let rootfs = format!("{dir}/rootfs");
    let mut setup = String::from("set -e\n");
    let mut mounted = Vec::new();
    let mut copies = Vec::new();
    let mut skipped = Vec::new();
    for m in spec.mounts().iter().flatten() {
        let destination = m.destination().to_string_lossy().into_owned();
        if !destination.starts_with('/') || destination.split('/').any(|part| part == "..") {
            bail!("mount destination {destination:?} is not an absolute path inside the container");
        }
        let target = format!("{rootfs}{destination}");
        let typ = m.typ().clone().unwrap_or_default();
        let mut opts = options(m);
        let mount_fs = |fs: &str, opts: &[String]| {
            let o = if opts.is_empty() { String::new() } else { format!(" -o {}", opts.join(",")) };
            format!("mkdir -p {t}\nmount -t {fs}{o} {fs} {t}\n", t = quote(&target))
        };
        let line = match typ.as_str() {
            _ if is_bind(m) => {
                let source = m.source().as_deref().context("a bind mount without a source")?;
                let meta = std::fs::metadata(source)
                    .with_context(|| format!("bind mount source {} (for {destination})", source.display()))?;
                let stage = volume_dir(source);
                copies.push(Copy { host: source.to_owned(), guest: stage.clone() });
                let (from, make) = if meta.is_dir() {
                    (stage, format!("mkdir -p {}", quote(&target)))
                } else {
                    let parent = Path::new(&target).parent().map_or("/".into(), |p| p.to_string_lossy().into_owned());
                    (format!("{stage}/file"), format!("mkdir -p {}\ntouch {}", quote(&parent), quote(&target)))
                };
                let mut line = format!("{make}\nmount --bind {} {}\n", quote(&from), quote(&target));
                if opts.iter().any(|o| o == "ro") {
                    writeln!(line, "mount -o remount,bind,ro {}", quote(&target)).ok();
                }
                line
            }
            // The VM is the pod's own: its device nodes are the container's.
            "tmpfs" if destination == "/dev" => mount_fs("devtmpfs", &[]),
            "proc" | "sysfs" | "tmpfs" | "mqueue" => mount_fs(&typ, &opts),
            "devpts" => {
                opts.retain(|o| !o.starts_with("gid="));
                mount_fs("devpts", &opts)
            }
            "cgroup" | "cgroup2" => {
                skipped.push(format!("{typ} mount at {destination}: the pod VM has no cgroup tree per container"));
                continue;
            }
            other => bail!("mount type {other:?} at {destination} is not supported by the Mica shim"),
        };
        setup.push_str(&line);
        mounted.push(target);
    }
    let mut teardown = String::new();
    for target in mounted.iter().rev() {
        writeln!(teardown, "umount -l {} 2>/dev/null || true", quote(target)).ok();
    }
    writeln!(teardown, "rm -rf {}", quote(&dir)).ok();
    Ok(Plan { dir, rootfs, copies, setup, teardown, skipped })
}

/// The container's process from `process` in the spec, inside `root` in the guest.
pub fn command(process: &oci_spec::runtime::Process, root: &str) -> Result<Command> {
    if process.terminal().unwrap_or(false) {
        bail!("a terminal (tty) for the container's process is not supported by the Mica shim yet");
    }
    let argv = process.args().clone().unwrap_or_default();
    if argv.is_empty() {
        bail!("the container's process has no arguments (no entrypoint or command in the image or the request)");
    }
    let env = process
        .env()
        .iter()
        .flatten()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    Ok(Command {
        argv,
        env,
        root: root.to_owned(),
        cwd: process.cwd().to_string_lossy().into_owned(),
        uid: process.user().uid(),
        gid: process.user().gid(),
        stdin: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).expect("spec")
    }

    #[test]
    fn mounts_become_a_setup_and_a_teardown_script() {
        let host_file = tempfile::NamedTempFile::new().expect("temp file");
        let host_dir = tempfile::tempdir().expect("temp dir");
        let json = format!(
            r#"{{"ociVersion":"1.0.2","process":{{"args":["sh"],"cwd":"/","user":{{"uid":0,"gid":0}}}},
              "mounts":[
                {{"destination":"/proc","type":"proc","source":"proc","options":["nosuid","noexec","nodev"]}},
                {{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755","size=65536k"]}},
                {{"destination":"/dev/pts","type":"devpts","source":"devpts","options":["nosuid","newinstance","ptmxmode=0666","mode=0620","gid=5"]}},
                {{"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["ro"]}},
                {{"destination":"/etc/hosts","type":"bind","source":"{file}","options":["rbind","rprivate","ro"]}},
                {{"destination":"/data","source":"{dir}","options":["rbind","rw"]}}
              ]}}"#,
            file = host_file.path().display(),
            dir = host_dir.path().display()
        );
        let plan = plan("c1", &spec(&json)).expect("plan");
        let root = "/run/mica/containers/c1/rootfs";
        assert_eq!(plan.rootfs, root);
        assert!(
            plan.setup.contains(&format!("mount -t proc -o nosuid,noexec,nodev proc '{root}/proc'")),
            "{}",
            plan.setup
        );
        assert!(plan.setup.contains(&format!("mount -t devtmpfs devtmpfs '{root}/dev'")), "{}", plan.setup);
        assert!(plan.setup.contains("-o nosuid,newinstance,ptmxmode=0666,mode=0620 devpts"), "{}", plan.setup);
        let (file_stage, dir_stage) = (volume_dir(host_file.path()), volume_dir(host_dir.path()));
        assert!(file_stage.starts_with("/run/mica/volumes/") && file_stage != dir_stage);
        assert!(plan.setup.contains(&format!(
            "touch '{root}/etc/hosts'\nmount --bind '{file_stage}/file' '{root}/etc/hosts'\n\
             mount -o remount,bind,ro '{root}/etc/hosts'"
        )));
        assert!(plan.setup.contains(&format!("mount --bind '{dir_stage}' '{root}/data'\n")));
        // Another container of the pod that mounts the same source shares the copy.
        assert_eq!(super::plan("c2", &spec(&json)).unwrap().copies, plan.copies);
        assert!(!plan.setup.contains(&format!("remount,bind,ro '{root}/data'")), "rw stays rw");
        assert_eq!(plan.copies.len(), 2);
        assert_eq!(plan.copies[0].host, host_file.path());
        assert_eq!(plan.skipped.len(), 1, "{:?}", plan.skipped);
        assert!(plan.teardown.starts_with(&format!("umount -l '{root}/data'")), "{}", plan.teardown);
        assert!(plan.teardown.ends_with("rm -rf '/run/mica/containers/c1'\n"), "{}", plan.teardown);
    }

    #[test]
    fn what_cannot_be_done_is_an_error_that_names_it() {
        let mount = |m: &str| {
            spec(&format!(
                r#"{{"ociVersion":"1.0.2","process":{{"args":["sh"],"cwd":"/","user":{{"uid":0,"gid":0}}}},"mounts":[{m}]}}"#
            ))
        };
        let e = plan("c", &mount(r#"{"destination":"/x","type":"nfs","source":"srv:/x"}"#)).unwrap_err();
        assert_eq!(e.to_string(), "mount type \"nfs\" at /x is not supported by the Mica shim");
        let e = plan("c", &mount(r#"{"destination":"/x","type":"bind","source":"/nonexistent/mica"}"#)).unwrap_err();
        assert!(format!("{e:#}").starts_with("bind mount source /nonexistent/mica (for /x): No such file"), "{e:#}");
        let e = plan("c", &mount(r#"{"destination":"/../x","type":"tmpfs","source":"tmpfs"}"#)).unwrap_err();
        assert!(e.to_string().contains("not an absolute path inside the container"), "{e}");
        let tty: oci_spec::runtime::Process =
            serde_json::from_str(r#"{"terminal":true,"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}}"#).unwrap();
        assert!(command(&tty, "/r").unwrap_err().to_string().contains("terminal (tty)"));
    }

    #[test]
    fn the_process_comes_from_the_spec() {
        let process: oci_spec::runtime::Process = serde_json::from_str(
            r#"{"args":["/bin/echo","hi"],"env":["PATH=/bin","EMPTY=","A=b=c"],"cwd":"/srv","user":{"uid":1000,"gid":100}}"#,
        )
        .unwrap();
        let cmd = command(&process, "/run/mica/containers/c/rootfs").unwrap();
        assert_eq!(cmd.argv, ["/bin/echo", "hi"]);
        assert_eq!(
            cmd.env,
            [("PATH".into(), "/bin".into()), ("EMPTY".into(), String::new()), ("A".into(), "b=c".into())]
        );
        assert_eq!(
            (cmd.cwd.as_str(), cmd.uid, cmd.gid, cmd.root.as_str()),
            ("/srv", 1000, 100, "/run/mica/containers/c/rootfs")
        );
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
