//! Fault injection for the rule backend: wrapper scripts around the real
//! iptables binaries that can be told to fail, hang or report the xtables lock.

/// A directory of `iptables`, `ip6tables`, `iptables-restore`, `ip6tables-restore`
/// scripts that exec the real binaries in /usr/sbin, except that a restore call can
/// be made to fail (`fail`: exit 1 after reading stdin), hang (`hang`: sleep 60) or
/// exit 4 as if the xtables lock were held (`lock`). Restore calls are counted in
/// `calls`; the `fault` file holds `ACTION` (every restore call) or `ACTION N`
/// (only the Nth).
#[derive(Debug)]
pub struct FaultyBins {
    pub dir: tempfile::TempDir,
}

impl FaultyBins {
    #[allow(clippy::new_without_default)] // it writes scripts to disk: not a plain default value
    pub fn new() -> FaultyBins {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "iptables",
            "ip6tables",
            "iptables-restore",
            "ip6tables-restore",
        ] {
            let fault = if name.ends_with("-restore") {
                r#"
# The envelope may start a restore ahead of time (a warm spare): decide only
# once the batch has arrived, and count only restores that got one.
case "$1" in --version|-V) exec /usr/sbin/$(basename "$0") "$@" ;; esac
input=$(cat)
[ -n "$input" ] || exit 0
n=$(cat "$dir/calls" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$dir/calls"
if [ -f "$dir/fault" ]; then
  read -r action at < "$dir/fault" || true
  if [ -z "$at" ] || [ "$at" = "$n" ]; then
    case "$action" in
      fail) echo "injected failure (call $n)" >&2; exit 1 ;;
      lock) echo "Another app is currently holding the xtables lock (call $n)" >&2; exit 4 ;;
      hang) exec sleep 60 ;;
      slow) sleep 2 ;;
    esac
  fi
fi
printf '%s\n' "$input" >> "$dir/batches"
printf '%s\n' "$input" | /usr/sbin/$(basename "$0") "$@"
rc=$?; echo "-> exit $rc" >> "$dir/batches"; exit $rc
"#
            } else {
                ""
            };
            let script = format!(
                "#!/bin/sh\ndir='{}'\n{fault}exec /usr/sbin/{name} \"$@\"\n",
                dir.path().display()
            );
            let path = dir.path().join(name);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        FaultyBins { dir }
    }

    pub fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Restore calls so far.
    pub fn calls(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `Some("fail")`, `Some("hang")`, `Some("lock")`, `Some("slow")` (2 s, then succeed) for every following restore
    /// call, or `None` to stop failing.
    pub fn set(&self, action: Option<&str>) {
        let path = self.dir.path().join("fault");
        match action {
            Some(action) => std::fs::write(path, format!("{action}\n")).unwrap(),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Makes only the `n`th restore call (counting from 1) do `action`.
    pub fn set_nth(&self, action: &str, n: usize) {
        std::fs::write(self.dir.path().join("fault"), format!("{action} {n}\n")).unwrap();
    }
}
