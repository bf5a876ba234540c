//! The todo tools: `todo`, `clearTodo` and `attemptCompletion`.
//!
//! The list belongs to one [`BaseSkill`] instance, so one run. Ids count from 0 and only reset
//! with `clearTodo`. `attemptCompletion` refuses (returns `remainingTodos`) while any item is
//! open; the agent loop decides what a `{}` answer means.

use std::sync::Arc;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, JsonObject};
use rmcp::{tool, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::BaseSkill;
use super::result::json_result;

/// One todo item: `{"id":0,"title":"..","completed":false}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TodoItem {
    /// Id, counting from 0 in creation order.
    pub id: u64,
    /// What to do.
    pub title: String,
    /// Whether it has been marked done.
    pub completed: bool,
}

/// The per-run list and its id counter.
#[derive(Debug, Default)]
pub(super) struct TodoList {
    next_id: u64,
    items: Vec<TodoItem>,
}

impl TodoList {
    pub(super) fn items(&self) -> &[TodoItem] {
        &self.items
    }

    /// Adds `new` (in order), then marks every id in `completed` as done. Ids are compared as
    /// JSON numbers, like Perstack's `includes`; unknown ids are ignored.
    pub(super) fn apply(&mut self, new: Vec<String>, completed: &[f64]) {
        for title in new {
            self.items.push(TodoItem {
                id: self.next_id,
                title,
                completed: false,
            });
            self.next_id += 1;
        }
        for item in &mut self.items {
            // Ids stay far below 2^53, so the conversion is exact.
            if completed.contains(&(item.id as f64)) {
                item.completed = true;
            }
        }
    }

    fn clear(&mut self) {
        self.items.clear();
        self.next_id = 0;
    }

    fn remaining(&self) -> Vec<TodoItem> {
        self.items
            .iter()
            .filter(|t| !t.completed)
            .cloned()
            .collect()
    }
}

/// `todo` arguments. `null` is accepted for either field, as if it were absent.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TodoArgs {
    new_todos: Option<Vec<String>>,
    completed_todos: Option<Vec<f64>>,
}

#[derive(Serialize)]
struct Todos<'a> {
    todos: &'a [TodoItem],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Completion {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    remaining_todos: Vec<TodoItem>,
}

/// `todo`'s input schema, written by hand to keep it plain (no `["array","null"]` types).
fn todo_input_schema() -> Arc<JsonObject> {
    let schema = json!({
        "type": "object",
        "properties": {
            "newTodos": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Titles of new todos to add"
            },
            "completedTodos": {
                "type": "array",
                "items": {"type": "integer"},
                "description": "Ids of todos to mark as completed"
            }
        }
    });
    match schema {
        Value::Object(map) => Arc::new(map),
        _ => Arc::default(),
    }
}

#[tool_router(router = todo_router, vis = "pub(super)")]
impl BaseSkill {
    #[tool(
        name = "todo",
        description = "Keep a todo list for the current task. `newTodos` adds items (each gets \
            an integer id, counting from 0); `completedTodos` marks the given ids as done. Both \
            are optional. Returns the whole list after every call.",
        input_schema = todo_input_schema()
    )]
    async fn todo(&self, Parameters(args): Parameters<TodoArgs>) -> CallToolResult {
        let mut list = self.lock_todos();
        list.apply(
            args.new_todos.unwrap_or_default(),
            &args.completed_todos.unwrap_or_default(),
        );
        json_result(&Todos {
            todos: list.items(),
        })
    }

    #[tool(
        name = "clearTodo",
        description = "Empty the todo list and restart ids at 0. Returns the empty list."
    )]
    async fn clear_todo(&self) -> CallToolResult {
        let mut list = self.lock_todos();
        list.clear();
        json_result(&Todos {
            todos: list.items(),
        })
    }

    #[tool(
        name = "attemptCompletion",
        description = "Call this, without any text in the same message, when the task is done. \
            If todos are still open they come back as `remainingTodos`: finish them (or mark \
            them completed) and call again. Otherwise it returns `{}` and you will be asked for \
            the final answer separately. Takes no arguments."
    )]
    async fn attempt_completion(&self) -> CallToolResult {
        let remaining_todos = self.lock_todos().remaining();
        json_result(&Completion { remaining_todos })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_count_from_zero_and_survive_completion() {
        let mut l = TodoList::default();
        l.apply(vec!["a".into(), "b".into()], &[]);
        l.apply(vec!["c".into()], &[1.0, 7.0, 0.5]);
        let ids: Vec<_> = l.items().iter().map(|t| (t.id, t.completed)).collect();
        assert_eq!(ids, [(0, false), (1, true), (2, false)]);
        assert_eq!(l.remaining().len(), 2);
        l.clear();
        l.apply(vec!["d".into()], &[0.0]);
        assert_eq!(l.items()[0].id, 0);
        assert!(l.items()[0].completed);
    }

    #[test]
    fn completion_with_nothing_open_serialises_as_an_empty_object() {
        let text = serde_json::to_string(&Completion {
            remaining_todos: vec![],
        })
        .unwrap();
        assert_eq!(text, "{}");
    }
}
