//! `bottle schema`: print the JSON Schema of `bottles.yaml`, made from the same
//! declaration the manifest validator takes its keys from
//! (`bottle_model::manifest::schema`). `schema/bottles.schema.json` is this output
//! (bottle-model's tests keep it so).

use super::write_stdout;

pub fn run() -> anyhow::Result<i32> {
    write_stdout(crate::manifest::schema::json_schema_text().as_bytes())?;
    Ok(0)
}
