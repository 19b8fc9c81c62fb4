"""Writes tickets.csv: invented customer-support messages for the demo (no real customer data).

Run `python -m tunesmith.data.example.generate` to rebuild it; the seed makes it byte-identical.
Texts are built from many openers, bodies and closers per class, with shared vocabulary between
classes (orders, accounts, cards appear everywhere) so that the task is not keyword-trivial.
"""
from __future__ import annotations

import csv
import random
from pathlib import Path

OPENERS = ["Hi,", "Hello,", "Hey there,", "Good morning,", "Hi team,", "", "", "Hello support,", "Dear support,",
           "Quick question:", "Urgent:", "Sorry to bother you again,"]
CLOSERS = ["", "", "Thanks.", "Thanks in advance!", "Please help.", "Can you sort this out?", "Cheers",
           "I'd appreciate a quick reply.", "This is really frustrating.", "Thank you!"]
ITEMS = ["headphones", "coffee machine", "laptop stand", "running shoes", "winter jacket", "phone case",
         "desk lamp", "blender", "backpack", "smart watch", "yoga mat", "office chair", "kettle", "monitor"]
DAYS = ["two days", "a week", "10 days", "three weeks", "a month", "five days"]
MONEY = ["$12.99", "$49", "$120", "$8.50", "$230", "$75.20", "$19.99"]

BODIES = {
    "billing": [
        "I was charged twice for order #{n}, the {money} shows up two times on my card statement.",
        "my invoice for last month says {money} but my plan is cheaper than that. Why the difference?",
        "there's a charge of {money} on my credit card that I don't recognise from your company.",
        "can you send me a VAT invoice for my purchase of the {item}? I need it for expenses.",
        "my subscription renewed automatically and took {money}. I thought I had cancelled it.",
        "the discount code was accepted at checkout but the final charge was still {money}.",
        "I updated my card details but the payment for my plan keeps failing.",
        "why am I being billed monthly when I signed up for the annual plan?",
        "I got an email saying my payment of {money} was declined, but the card works everywhere else.",
        "please explain the extra fee of {money} on my latest bill.",
    ],
    "delivery": [
        "my {item} was supposed to arrive {days} ago and it still hasn't shown up.",
        "the tracking for order #{n} hasn't updated in {days}. Where is my parcel?",
        "the courier says the {item} was delivered but there is nothing at my door.",
        "can I change the delivery address for order #{n}? I'm moving next week.",
        "the package with my {item} arrived with the box crushed and wet.",
        "I paid for express shipping but the {item} is taking {days}.",
        "the driver left my parcel with a neighbour I don't know. Can you find out where it is?",
        "is it possible to pick up order #{n} from a store instead of waiting for delivery?",
        "my order shows as shipped {days} ago but the tracking number doesn't work.",
        "only half of order #{n} arrived, the {item} is missing from the box.",
    ],
    "account": [
        "I can't log in to my account, it keeps saying my password is wrong even after a reset.",
        "the password reset email never arrives, I've checked spam too.",
        "my account got locked after too many attempts. How do I unlock it?",
        "I want to change the email address on my account but the option is greyed out.",
        "someone else seems to have logged into my account, I see orders I didn't place.",
        "how do I delete my account and all my personal data?",
        "the two-factor code is sent to my old phone number which I no longer have.",
        "I have two accounts by mistake, can you merge them so my order history is in one place?",
        "I keep getting logged out every few minutes on the website.",
        "I forgot which email I used to sign up. Can you help me get back into my account?",
    ],
    "technical": [
        "the app crashes every time I open the order history page.",
        "the {item} I bought won't connect to the app over bluetooth.",
        "the checkout page just spins forever and never finishes loading.",
        "after the last update the app shows a blank white screen on my phone.",
        "the {item} turns off by itself after a few minutes of use.",
        "I get an error code 502 when I try to save my address in the website.",
        "the firmware update for my {item} failed halfway and now it won't start.",
        "the search on your website returns nothing, even for products I know you sell.",
        "notifications from the app stopped working since {days} ago.",
        "the {item} display flickers and shows strange colours.",
    ],
    "returns": [
        "I'd like to return the {item}, it doesn't fit. How do I get a return label?",
        "I sent the {item} back {days} ago and still haven't received my refund of {money}.",
        "the {item} is not what the photos showed, I want my money back.",
        "can I exchange the {item} for a different size instead of a refund?",
        "my return for order #{n} was rejected, but the item was unused and in its box.",
        "how long does it take for a refund to reach my card after you receive the return?",
        "the return window says 30 days, I bought the {item} {days} ago, can I still send it back?",
        "I was refunded {money} but I paid more than that for the {item}.",
        "do I have to pay for return shipping if the {item} arrived faulty?",
        "I want to cancel order #{n} before it ships and get a refund.",
    ],
    "product": [
        "does the {item} come with a warranty, and for how long?",
        "is the {item} available in black? The website only shows grey.",
        "what's the difference between the basic and pro version of the {item}?",
        "will the {item} be back in stock soon? It has been sold out for {days}.",
        "is the {item} compatible with older models, or do I need an adapter?",
        "can you tell me the exact dimensions and weight of the {item}?",
        "do you sell replacement parts for the {item}?",
        "is the {item} suitable for outdoor use in the rain?",
        "what material is the {item} made of? I have allergies.",
        "do you offer a student discount on the {item}?",
    ],
}


def generate(n_per_class: int = 120, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    for label, bodies in BODIES.items():
        count = 0
        while count < n_per_class:
            body = rng.choice(bodies).format(n=rng.randint(10000, 99999), item=rng.choice(ITEMS),
                                             days=rng.choice(DAYS), money=rng.choice(MONEY))
            opener, closer = rng.choice(OPENERS), rng.choice(CLOSERS)
            text = " ".join(p for p in [opener, body[0].upper() + body[1:] if not opener else body, closer] if p)
            if rng.random() < 0.15:
                text = text.lower()
            if text in seen:
                continue
            seen.add(text)
            rows.append({"text": text, "label": label})
            count += 1
    rng.shuffle(rows)
    return rows


def write(path: Path | None = None) -> Path:
    path = path or Path(__file__).with_name("tickets.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(generate())
    return path


if __name__ == "__main__":
    print(write())
