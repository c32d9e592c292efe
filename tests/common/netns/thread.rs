//! [`NsThread`]: a long-lived thread inside one namespace of a [`super::Lab`], with a
//! tokio runtime, for clients whose sockets must belong to that namespace (HTTP to the
//! nodes' frontends from the client host).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::super::haproxy::Response;
use super::{enter, ns_path};

type Job = Box<dyn FnOnce(&tokio::runtime::Runtime) + Send>;

/// A thread living in one namespace with a tokio current-thread runtime: the test hands
/// it async closures ([`NsThread::run`]) whose sockets belong to that namespace, one at
/// a time. Ends when dropped. Its methods block: call them from synchronous test code
/// (or `spawn_blocking`), not from inside an async task.
pub struct NsThread {
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    ns: String,
}

impl NsThread {
    pub(super) fn start(ns: &str) -> NsThread {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel::<Result<(), String>>();
        let path = ns_path(ns);
        let worker = std::thread::Builder::new()
            .name(format!("netns {ns}"))
            .spawn(move || {
                let runtime = enter(&path)
                    .map_err(|e| format!("setns {}: {e}", path.display()))
                    .and_then(|()| {
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(|e| format!("tokio runtime: {e}"))
                    });
                let runtime = match runtime {
                    Ok(rt) => {
                        let _ = ready_tx.send(Ok(()));
                        rt
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for job in inbox {
                    job(&runtime);
                }
            })
            .expect("spawn netns thread");
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("netns thread in {ns}: {e}"),
            Err(_) => panic!("netns thread in {ns} died during startup"),
        }
        NsThread {
            jobs: Some(jobs),
            worker: Some(worker),
            ns: ns.to_string(),
        }
    }

    /// Runs `f()`'s future to completion on the thread and returns its output. A panic
    /// in it panics here (the thread stays usable).
    pub fn run<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |rt: &tokio::runtime::Runtime| {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(f())));
            let _ = reply.send(result);
        });
        self.jobs
            .as_ref()
            .expect("netns thread")
            .send(job)
            .unwrap_or_else(|_| panic!("netns thread in {} is gone", self.ns));
        match answer.recv() {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!("netns thread in {} dropped the job", self.ns),
        }
    }

    /// GET `url` with `headers` added (10 s timeout, no proxy): status, headers (lower
    /// case) and body, or the error as text.
    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
        let url = url.to_string();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.run(move || async move {
            let client = http_client()?;
            let mut request = client.get(&url);
            for (k, v) in &headers {
                request = request.header(k.as_str(), v.as_str());
            }
            let response = request
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = response.status().as_u16();
            let mut headers: BTreeMap<String, String> = BTreeMap::new();
            for (k, v) in response.headers() {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                headers
                    .entry(k.as_str().to_string())
                    .and_modify(|old| {
                        old.push_str(", ");
                        old.push_str(&v);
                    })
                    .or_insert(v);
            }
            let body = response
                .text()
                .await
                .map_err(|e| format!("body of {url}: {e}"))?;
            Ok(Response {
                status,
                headers,
                body,
            })
        })
    }

    /// `n` GETs of `url` one after the other over one keep-alive connection (as far as
    /// the server keeps it open); the statuses in order, or the first error as text.
    pub fn burst(&self, url: &str, n: usize) -> Result<Vec<u16>, String> {
        let url = url.to_string();
        self.run(move || async move {
            let client = http_client()?;
            let mut statuses = Vec::with_capacity(n);
            for i in 0..n {
                let response = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| format!("GET {url} #{i}: {e}"))?;
                statuses.push(response.status().as_u16());
                response
                    .bytes()
                    .await
                    .map_err(|e| format!("body of {url} #{i}: {e}"))?;
            }
            Ok(statuses)
        })
    }
}

/// One request of [`NsThread::spread`].
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Which of the URLs.
    pub target: usize,
    /// The status, 0 for a transport error.
    pub status: u16,
    /// From sending to the whole response.
    pub latency: Duration,
}

impl NsThread {
    /// GETs `urls` in turn (one keep-alive client each), round after round, for
    /// `duration`, pausing `pause` after each round: every request with its status and
    /// latency.
    pub fn spread(&self, urls: &[String], duration: Duration, pause: Duration) -> Vec<Sent> {
        let urls = urls.to_vec();
        self.run(move || async move {
            let clients: Vec<reqwest::Client> = urls
                .iter()
                .map(|_| http_client().expect("client"))
                .collect();
            let mut sent = Vec::new();
            let start = std::time::Instant::now();
            while start.elapsed() < duration {
                for (target, (url, client)) in urls.iter().zip(&clients).enumerate() {
                    let begun = std::time::Instant::now();
                    let status = match client.get(url).send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let _ = response.bytes().await;
                            status
                        }
                        Err(_) => 0,
                    };
                    sent.push(Sent {
                        target,
                        status,
                        latency: begun.elapsed(),
                    });
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            sent
        })
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("reqwest client: {e}"))
}
