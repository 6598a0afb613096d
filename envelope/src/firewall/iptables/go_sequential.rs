//! The Go original's way of granting, kept only as a baseline for the benchmark
//! (`--firewall-go-sequential`, hidden): three separate `iptables` commands per
//! grant (the client's subnet, tcp/80, tcp/443) and the three matching deletes per
//! revoke, one subnet after another. Not atomic — which is the point of comparing.

use super::command::{RunError, Runner};
use super::rules::{Family, GRANTS_CHAIN};
use crate::firewall::Subnet;

/// The rule specs the Go original adds for one grant.
fn specs(subnet: &Subnet) -> [String; 3] {
    [
        format!("-s {subnet} -m comment --comment envelope:go-grant -j ACCEPT"),
        "-p tcp --dport 80 -m comment --comment envelope:go-grant -j ACCEPT".to_owned(),
        "-p tcp --dport 443 -m comment --comment envelope:go-grant -j ACCEPT".to_owned(),
    ]
}

async fn each(runner: &Runner, op: &str, subnet: &Subnet) -> Result<(), RunError> {
    let family = Family::of(subnet);
    let wait = format!("--wait={}", 5);
    for spec in specs(subnet) {
        let mut args = vec![wait.as_str(), op, GRANTS_CHAIN];
        args.extend(spec.split(' '));
        runner
            .run(family.iptables(), &args, None, &format!("{op} {subnet}"))
            .await?;
    }
    Ok(())
}

pub async fn grant(runner: &Runner, subnet: &Subnet) -> Result<(), RunError> {
    each(runner, "-A", subnet).await
}

pub async fn revoke(runner: &Runner, subnet: &Subnet) -> Result<(), RunError> {
    each(runner, "-D", subnet).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_rules_per_grant_like_the_go_original() {
        let subnet = Subnet::of_client("192.0.2.9".parse().unwrap());
        let specs = specs(&subnet);
        assert!(specs[0].starts_with("-s 192.0.2.0/24 "));
        assert!(specs[1].contains("--dport 80 "));
        assert!(specs[2].contains("--dport 443 "));
    }
}
