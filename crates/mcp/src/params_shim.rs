//! Temporary stand-in for the policy's tool parameters (branch `params`), removed when it
//! is merged: the inherent `Tool::input_schema` and `Tool::bind` then take precedence.

use nanoclaw_policy::{ExtraArgs, Tool};
use serde_json::{json, Map, Value};

pub(crate) trait ToolParams {
    fn input_schema(&self) -> Value;
    fn bind(&self, input: &Map<String, Value>) -> Result<(), String>;
}

impl ToolParams for Tool {
    fn input_schema(&self) -> Value {
        let mut properties = Map::new();
        if self.args == ExtraArgs::Append {
            properties.insert("args".into(), json!({"type": "array", "items": {"type": "string"}}));
        }
        json!({"type": "object", "properties": properties, "additionalProperties": false})
    }

    fn bind(&self, input: &Map<String, Value>) -> Result<(), String> {
        for (key, value) in input {
            match (key.as_str(), value) {
                ("args", Value::Array(items)) if self.args == ExtraArgs::Append && items.iter().all(Value::is_string) => {}
                ("args", _) if self.args == ExtraArgs::Append => return Err("parameter `args` must be an array of strings".into()),
                _ => return Err(format!("unknown parameter `{key}`")),
            }
        }
        Ok(())
    }
}
