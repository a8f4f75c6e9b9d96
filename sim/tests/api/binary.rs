//! The `emr-sim` binary: announces its address, honours `--config`, stops on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn the_binary_serves_until_sigterm() {
    let dir = std::env::temp_dir().join(format!("emr-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sim.json");
    std::fs::write(&config, r#"{"token_lifetime_secs": 60}"#).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_emr-sim"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("emr-sim listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"));

    let http = reqwest::Client::new();
    let health = http
        .get(format!("{base}/__sim/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let token = http
        .post(format!("{base}/oauth/token"))
        .basic_auth(
            emr_sim::EMR_EDGE_CLIENT_ID,
            Some(emr_sim::EMR_EDGE_CLIENT_SECRET),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(token["expires_in"], 60);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut status = None;
    for _ in 0..50 {
        if let Some(exit) = child.try_wait().unwrap() {
            status = Some(exit);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("emr-sim did not stop on SIGTERM");
    });
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_config_is_refused_with_the_field_named() {
    let dir = std::env::temp_dir().join(format!("emr-sim-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("sim.json");
    std::fs::write(&config, r#"{"rate_limit_per_minute": 0}"#).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_emr-sim"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rate_limit_per_minute"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
