//! A Server-Sent Events reader for tests: a plain HTTP client over
//! loopback (reqwest, reading the body as it comes) and the event format
//! parsed as the SSE specification says, not as our server happens to
//! write it.

use std::time::Duration;

/// One event, as a client dispatches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `event:` (`message` when not given).
    pub kind: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// `id:` of this event, if it had one.
    pub id: Option<String>,
}

/// How long any one read may take before the test fails.
const READ_LIMIT: Duration = Duration::from_secs(10);

/// An open event stream.
pub struct EventReader {
    response: reqwest::Response,
    buffer: String,
    /// Comments (keep-alives) and `retry:` lines seen so far.
    pub comments: usize,
    pub retry: Option<u64>,
}

impl EventReader {
    /// Opens `url` with `headers`; panics unless the answer is a 200 event
    /// stream.
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> EventReader {
        let response = Self::request(url, headers).await;
        assert_eq!(response.status(), 200, "{url}");
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(kind, "text/event-stream", "{url}");
        EventReader {
            response,
            buffer: String::new(),
            comments: 0,
            retry: None,
        }
    }

    /// The raw answer, for refusals.
    pub async fn request(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = reqwest::Client::new().get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("GET an event stream")
    }

    /// The next event (comments skipped, counted); `None` when the stream
    /// ended.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = self.parse(&block) {
                    return Some(event);
                }
                continue;
            }
            let chunk = tokio::time::timeout(READ_LIMIT, self.response.chunk())
                .await
                .expect("an event within the read limit")
                .expect("reading the event stream")?;
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }

    /// Reads (events left in the buffer) until `n` comments were seen.
    pub async fn until_comments(&mut self, n: usize) {
        while self.comments < n {
            let chunk = tokio::time::timeout(READ_LIMIT, self.response.chunk())
                .await
                .expect("a keep-alive within the read limit")
                .expect("reading the event stream")
                .expect("the stream goes on");
            let text = std::str::from_utf8(&chunk).expect("UTF-8 events");
            self.comments += text.lines().filter(|line| line.starts_with(':')).count();
            self.buffer.push_str(&text.replace(":\n\n", ""));
        }
    }

    /// The next event that is not a welcome.
    pub async fn next_message(&mut self) -> Event {
        loop {
            let event = self.next().await.expect("the stream goes on");
            if event.kind != "welcome" {
                return event;
            }
        }
    }

    /// Whether the stream ends (the server closed it) within the limit,
    /// skipping events.
    pub async fn ends(&mut self) -> Vec<Event> {
        let mut seen = Vec::new();
        while let Some(event) = self.next().await {
            seen.push(event);
        }
        seen
    }

    fn parse(&mut self, block: &str) -> Option<Event> {
        let (mut kind, mut data, mut id) = (None::<String>, None::<String>, None);
        for line in block.lines() {
            if line.starts_with(':') {
                self.comments += 1;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => kind = Some(value.to_owned()),
                "data" => match &mut data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                },
                "id" => id = Some(value.to_owned()),
                "retry" => self.retry = value.parse().ok(),
                _ => {}
            }
        }
        // An event without data is not dispatched.
        Some(Event {
            kind: kind.unwrap_or_else(|| "message".to_owned()),
            data: data?,
            id,
        })
    }
}
