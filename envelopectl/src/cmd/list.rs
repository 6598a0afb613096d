//! `envelopectl list [--json]`.

use common::admin::{Grant, GRANTS_PATH};
use envelopectl::{Client, CtlError};
use time::OffsetDateTime;

use super::human;

pub async fn run(client: &Client, json: bool) -> Result<(), CtlError> {
    if json {
        let value = client.get_json(GRANTS_PATH).await?;
        println!("{value}");
        return Ok(());
    }
    let grants = client.grants().await?;
    print!("{}", table(&grants, OffsetDateTime::now_utc()));
    Ok(())
}

fn table(grants: &[Grant], now: OffsetDateTime) -> String {
    if grants.is_empty() {
        return "no live grants\n".to_owned();
    }
    // KERNEL: how long the kernel itself still holds the subnet open.
    let kernel = grants.iter().any(|g| g.kernel_remaining_seconds.is_some());
    let mut header: Vec<String> = ["ID", "CLIENT", "SUBNET", "SUBJECT", "AGE", "LEFT"]
        .map(String::from)
        .to_vec();
    if kernel {
        header.push("KERNEL".into());
    }
    let rows: Vec<Vec<String>> = grants
        .iter()
        .map(|g| {
            let subject = if g.monitoring && g.subject != "monitoring" {
                format!("{} (monitoring)", g.subject)
            } else if g.subject.is_empty() {
                "-".to_owned()
            } else {
                g.subject.clone()
            };
            let mut row = vec![
                g.id.to_string(),
                g.ip.to_string(),
                g.subnet.clone(),
                subject,
                human((now - g.started).try_into().unwrap_or_default()),
                human((g.deadline - now).try_into().unwrap_or_default()),
            ];
            if kernel {
                row.push(match g.kernel_remaining_seconds {
                    Some(0) => "gone".to_owned(),
                    Some(secs) => human(std::time::Duration::from_secs(secs)),
                    None => "-".to_owned(),
                });
            }
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, &w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn table_has_one_aligned_row_per_grant() {
        let grant = Grant {
            id: 3,
            ip: "192.0.2.7".parse().unwrap(),
            subnet: "192.0.2.0/24".into(),
            subject: "ndt".into(),
            monitoring: false,
            started: datetime!(2026-11-25 10:00:00 UTC),
            deadline: datetime!(2026-11-25 10:01:00 UTC),
            kernel_remaining_seconds: None,
        };
        let text = table(
            std::slice::from_ref(&grant),
            datetime!(2026-11-25 10:00:12 UTC),
        );
        assert_eq!(
            text,
            "ID  CLIENT     SUBNET        SUBJECT  AGE  LEFT\n3   192.0.2.7  192.0.2.0/24  ndt      12s  48s\n"
        );
        assert_eq!(
            table(&[], datetime!(2026-11-25 10:00:12 UTC)),
            "no live grants\n"
        );
        let kernel = Grant {
            kernel_remaining_seconds: Some(53),
            ..grant
        };
        assert_eq!(
            table(&[kernel], datetime!(2026-11-25 10:00:12 UTC)),
            "ID  CLIENT     SUBNET        SUBJECT  AGE  LEFT  KERNEL\n3   192.0.2.7  192.0.2.0/24  ndt      12s  48s   53s\n"
        );
    }
}
