//! A real GraphQL server (async-graphql behind axum) for the GraphQL connector tests: books
//! to query, a mutation that adds one, and a query that fails with a GraphQL error.

use std::sync::{Arc, Mutex};

use async_graphql::{Context, EmptySubscription, Enum, ID, Object, SimpleObject};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;

/// What the server saw.
#[derive(Default)]
pub struct Seen {
    /// The `Authorization` header of every POST ("" when absent).
    pub authorizations: Vec<String>,
    /// The titles `addBook` added.
    pub added: Vec<String>,
}

pub type Shared = Arc<Mutex<Seen>>;

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
enum Genre {
    Fiction,
    History,
}

#[derive(SimpleObject, Clone)]
struct Author {
    name: String,
}

#[derive(SimpleObject, Clone)]
struct Book {
    id: ID,
    title: String,
    genre: Genre,
    author: Author,
}

fn dune() -> Book {
    Book {
        id: ID::from("1"),
        title: "Dune".into(),
        genre: Genre::Fiction,
        author: Author {
            name: "Frank Herbert".into(),
        },
    }
}

struct Query;

#[Object]
impl Query {
    /// One book by its id.
    async fn book(&self, id: ID) -> async_graphql::Result<Book> {
        if id.as_str() == "1" {
            Ok(dune())
        } else {
            Err(format!("no book {}", id.as_str()).into())
        }
    }

    /// Every book.
    async fn books(&self) -> Vec<Book> {
        vec![dune()]
    }
}

struct Mutation;

#[Object]
impl Mutation {
    /// Adds a book.
    async fn add_book(&self, ctx: &Context<'_>, title: String, genre: Option<Genre>) -> Book {
        ctx.data_unchecked::<Shared>()
            .lock()
            .unwrap()
            .added
            .push(title.clone());
        Book {
            id: ID::from("2"),
            title,
            genre: genre.unwrap_or(Genre::History),
            author: Author {
                name: "someone".into(),
            },
        }
    }
}

type Schema = async_graphql::Schema<Query, Mutation, EmptySubscription>;

fn schema(seen: Shared) -> Schema {
    Schema::build(Query, Mutation, EmptySubscription)
        .data(seen)
        .finish()
}

/// The schema's SDL, as a project would keep it in its repository.
pub fn sdl() -> String {
    schema(Shared::default()).sdl()
}

/// The request's `Authorization` header, "" when absent.
pub fn authorization(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The server on 127.0.0.1:0, answering POST /graphql; its port and what it sees.
pub async fn start() -> (u16, Shared) {
    let seen = Shared::default();
    let app = axum::Router::new()
        .route(
            "/graphql",
            axum::routing::post(
                |State((schema, seen)): State<(Schema, Shared)>,
                 headers: HeaderMap,
                 Json(request): Json<async_graphql::Request>| async move {
                    seen.lock()
                        .unwrap()
                        .authorizations
                        .push(authorization(&headers));
                    Json(schema.execute(request).await)
                },
            ),
        )
        .with_state((schema(seen.clone()), seen.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, seen)
}
