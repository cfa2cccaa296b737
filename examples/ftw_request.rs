//! Prints the raw request bytes go-ftw would send for one regression test stage.
//! Usage: ftw_request TESTS_DIR RULE_ID TEST_ID > request.txt

use gatehouse::ftw::request::build_request;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (dir, rule, test) = (&args[1], &args[2], &args[3]);
    for f in gatehouse::ftw::load_dir(std::path::Path::new(dir))? {
        for (i, t) in f.file.tests.iter().enumerate() {
            let _ = i;
            let id = t.test_id.to_string();
            if f.file.rule_id.to_string() == *rule && id == *test {
                for s in &t.stages {
                    use std::io::Write;
                    std::io::stdout().write_all(&build_request(&s.input)?)?;
                }
            }
        }
    }
    Ok(())
}
