"""User-facing messages in English, German and Chinese.

Only the CLI's short status messages are translated; errors stay in English so they can be searched for.
A missing translation falls back to English instead of failing.
"""

from __future__ import annotations

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "added": "Added task {id}: {title}",
        "completed": "✔ Completed task {id}: {title}",
        "next": "↻ Next occurrence due {due}",
        "deleted": "Deleted task {id}",
        "nothing": "Nothing to do. Enjoy your day! 🌞",
        "overdue": "{count} overdue",
        "unplanned": "Did not fit this week: {titles}",
    },
    "de": {
        "added": "Aufgabe {id} hinzugefügt: {title}",
        "completed": "✔ Aufgabe {id} erledigt: {title}",
        "next": "↻ Nächste Wiederholung fällig am {due}",
        "deleted": "Aufgabe {id} gelöscht",
        "nothing": "Nichts zu tun. Schönen Tag noch! 🌞",
        "overdue": "{count} überfällig",
        "unplanned": "Passt diese Woche nicht mehr hinein: {titles}",
    },
    "zh": {
        "added": "已添加任务 {id}：{title}",
        "completed": "✔ 已完成任务 {id}：{title}",
        "next": "↻ 下一次到期日：{due}",
        "deleted": "已删除任务 {id}",
        "nothing": "没有待办事项，祝你愉快！🌞",
        "overdue": "{count} 项已逾期",
        "unplanned": "本周排不下：{titles}",
    },
}
FALLBACK = "en"


def supported_languages() -> list[str]:
    return sorted(MESSAGES)


def translate(key: str, language: str = FALLBACK, **values: object) -> str:
    """The message `key` in `language` (``"de"``, ``"de_AT.UTF-8"`` and ``"de-CH"`` all mean German)."""
    code = language.replace("-", "_").split("_")[0].split(".")[0].lower()
    table = MESSAGES.get(code, MESSAGES[FALLBACK])
    template = table.get(key) or MESSAGES[FALLBACK][key]
    return template.format(**values)
