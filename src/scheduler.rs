//! The cron schedule: runs start on `schedule.cron`, never two at once in one process, and a
//! shutdown signal lets the current run finish within `shutdown.grace`.

use croner::parser::{CronParser, Seconds};

/// Turns a 5-field expression into the 6-field form (seconds first) the scheduler reads, and
/// checks that it parses.
pub fn parse_cron(expression: &str) -> Result<String, String> {
    let fields = expression.split_whitespace().count();
    let six_fields = if fields == 5 {
        format!("0 {}", expression.trim())
    } else {
        expression.trim().to_string()
    };
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(&six_fields)
        .map_err(|err| err.to_string())?;
    Ok(six_fields)
}
