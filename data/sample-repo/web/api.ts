// Typed client for the tasklet HTTP API (served by the tasklet-web add-on).
// Shared by the web front-end and the browser extension; it has no dependencies besides `fetch`.

export type Priority = "low" | "normal" | "high" | "urgent";
export type Status = "todo" | "doing" | "done" | "cancelled";

export interface Task {
  id: number;
  title: string;
  notes: string;
  priority: Priority;
  status: Status;
  tags: string[];
  due: string | null; // ISO date, e.g. "2025-03-12"
  estimate_minutes: number | null;
  recurrence: string | null;
  created: string;
  completed: string | null;
}

export type NewTask = Pick<Task, "title"> & Partial<Omit<Task, "id" | "created" | "completed">>;

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "ApiError";
  }

  /** 4xx errors are the caller's fault and must not be retried. */
  get retryable(): boolean {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

export interface ClientOptions {
  baseUrl: string;
  token?: string;
  retries?: number;
  timeoutMs?: number;
}

const PRIORITY_ORDER: Record<Priority, number> = { low: 1, normal: 2, high: 3, urgent: 4 };

export function comparePriority(a: Priority, b: Priority): number {
  return PRIORITY_ORDER[b] - PRIORITY_ORDER[a];
}

export function isOverdue(task: Task, today: Date = new Date()): boolean {
  if (task.due === null || task.status === "done" || task.status === "cancelled") {
    return false;
  }
  const todayIso = today.toISOString().slice(0, 10);
  return task.due < todayIso; // ISO dates compare correctly as strings
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class TaskletClient {
  private readonly baseUrl: string;
  private readonly retries: number;
  private readonly timeoutMs: number;

  constructor(private readonly options: ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.retries = options.retries ?? 2;
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  list(query = ""): Promise<Task[]> {
    const params = query ? `?q=${encodeURIComponent(query)}` : "";
    return this.request<Task[]>("GET", `/tasks${params}`);
  }

  get(id: number): Promise<Task> {
    return this.request<Task>("GET", `/tasks/${id}`);
  }

  add(task: NewTask): Promise<Task> {
    return this.request<Task>("POST", "/tasks", task);
  }

  complete(id: number): Promise<{ task: Task; next: Task | null }> {
    return this.request("POST", `/tasks/${id}/done`);
  }

  remove(id: number): Promise<void> {
    return this.request<void>("DELETE", `/tasks/${id}`);
  }

  /** Retries network failures and 5xx answers with exponential backoff (250 ms, 500 ms, ...). */
  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    let attempt = 0;
    for (;;) {
      try {
        return await this.once<T>(method, path, body);
      } catch (error) {
        const retryable = error instanceof ApiError && error.retryable && method !== "POST";
        if (!retryable || attempt >= this.retries) {
          throw error;
        }
        await sleep(250 * 2 ** attempt);
        attempt += 1;
      }
    }
  }

  private async once<T>(method: string, path: string, body?: unknown): Promise<T> {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.timeoutMs);
    const headers: Record<string, string> = { Accept: "application/json" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
    }
    if (this.options.token) {
      headers.Authorization = `Bearer ${this.options.token}`;
    }
    let response: Response;
    try {
      response = await fetch(this.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: controller.signal,
      });
    } catch (error) {
      throw new ApiError(0, `network error: ${(error as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
    if (!response.ok) {
      const text = await response.text().catch(() => "");
      throw new ApiError(response.status, text || response.statusText);
    }
    return response.status === 204 ? (undefined as T) : ((await response.json()) as T);
  }
}
