"""shop.tasks: the shop's background jobs, imported by the web app and by the worker."""

from hopper_client import Tasks, current_job

jobs = Tasks()
SENT: list[str] = []  # the welcome mails sent by this process (a real shop calls a mailer)


@jobs.task(queue="critical", retry=5)
def send_welcome(email: str) -> dict[str, object]:
    """Send the welcome mail; the receipt says how the job was run."""
    SENT.append(email)
    job = current_job()
    return {"to": email, "queue": job.queue, "retry": job.retry}


@jobs.task()
async def sign_up(email: str, welcome: bool = True) -> None:
    """Open the account, then (in a job of its own) send the welcome mail."""
    if "@" not in email:
        raise ValueError(f"not an address: {email!r}")
    if welcome:
        await send_welcome.apush(email)
