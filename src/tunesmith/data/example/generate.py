"""Writes tickets.csv: invented customer-support messages for the demo (no real customer data).

Run `python -m tunesmith.data.example.generate` to rebuild it; the seed makes it byte-identical.

The data is built so that the untouched model's embeddings are not enough, which is what the demo
has to show. Nine classes come in three families whose members share their vocabulary and differ
only by what the customer wants:
  orders:   refund (money back) / return (how to send it back) / exchange (a different one instead)
  sign-in:  login (cannot get in) / password_reset (the reset itself) / two_factor (the second code)
  delivery: late_delivery (still on its way) / lost_parcel (gone, or "delivered" but not here) /
            wrong_address (the address is or was wrong)
Each text wraps a short intent sentence in a longer context sentence that any class of its family
(and sometimes another family) uses, so a mean-pooled embedding is mostly context. A third of the
texts add a negated mention of a sibling's intent ("I don't want my money back, ..."): the words
point the wrong way and only a reading of the sentence gets it right. Typos and lower-case texts
add noise, and a few intent sentences are worded so that two classes would fit (kept on purpose:
real tickets are like that).
"""
from __future__ import annotations

import csv
import random
from pathlib import Path

ITEMS = ["headphones", "coffee machine", "running shoes", "winter jacket", "phone case", "desk lamp", "blender",
         "backpack", "smart watch", "office chair", "kettle", "monitor", "jeans", "sofa cushion", "tablet"]
DAYS = ["Monday", "Tuesday", "last week", "the 3rd", "two weeks ago", "Friday", "ten days ago", "yesterday"]
DEVICES = ["iPhone", "Android phone", "laptop", "work computer", "tablet", "new phone"]

OPENERS = ["Hi,", "Hello,", "Hey,", "Hi there,", "Good morning,", "Hello support,", "Dear team,", "", "", "", ""]
CLOSERS = ["", "", "", "Thanks.", "Thanks in advance!", "Please help.", "Cheers", "Thank you!",
           "I'd appreciate a quick answer.", "This is getting frustrating."]

# Context sentences are shared by a whole family: they carry most of the words and none of the intent.
CONTEXT = {
    "orders": ["I ordered the {item} on your website {day} (order #{n}).",
               "Order #{n}: the {item} I bought {day}.",
               "I bought a {item} from you {day} and it arrived in its box.",
               "This is about the {item} from order #{n}, paid by card.",
               "I got the {item} {day}, order number {n}.",
               "My order #{n} with the {item} came {day}."],
    "signin": ["I'm trying to get into my account on my {device}.",
               "I use the app on my {device} and the website on my {device2}.",
               "I've had an account with you for years, email ending in @{mail}.",
               "This is about my account, the one with the email ending @{mail}.",
               "On my {device} since {day}:",
               "I have an order (#{n}) I need to check in my account."],
    "delivery": ["My order #{n} with the {item} was shipped {day}.",
                 "I ordered a {item} {day}, tracking number {n}.",
                 "This is about parcel {n} with my {item}.",
                 "The {item} from order #{n} was sent out {day}.",
                 "I'm waiting on order #{n}, a {item}.",
                 "Tracking for order #{n} (the {item}) says it left the warehouse {day}."],
}
# Filler any class may carry: it dilutes the intent sentence in a mean-pooled embedding.
FILLER = ["I've been a customer for years and never had a problem before.", "I already asked on the chat yesterday.",
          "My reference number is {n}.", "I've tried twice now.", "Nobody answered my last email about this.",
          "I'm writing from my partner's account.", "I need this sorted before the weekend.",
          "Your phone line had a 40 minute wait.", "I looked through the help pages first.",
          "It's the second time this happened this year."]
FAMILY = {"refund": "orders", "return": "orders", "exchange": "orders",
          "login": "signin", "password_reset": "signin", "two_factor": "signin",
          "late_delivery": "delivery", "lost_parcel": "delivery", "wrong_address": "delivery"}

INTENTS = {
    "refund": ["I want my money back.", "Please refund the full amount to my card.",
               "Can I get a refund for it?", "I'd like the payment reversed.",
               "How long until the refund shows on my card?", "You still haven't refunded me.",
               "Please just give me my money back.", "I returned it already, where is my refund?",
               "I want the charge cancelled and the money returned.", "Refund it please, I'm done with it.",
               "Can you credit the amount back to my account?", "I expect a full reimbursement.",
               "I returned it last week and I'm still waiting for the money.", "Rather than a replacement, I'd like the money.",
               "The return was accepted, so where is the money?", "Forget the exchange, just pay me back."],
    "return": ["How do I send it back?", "Can you email me a return label?",
               "Where do I drop off the return?", "I'd like to return it, what are the steps?",
               "Do I need the original box to send it back?", "Is there a return form I have to fill in?",
               "Can a courier collect it from my house for the return?", "I want to return it within the 30 days.",
               "What address do I ship the return to?", "Do I pay the postage to send it back?",
               "The return portal won't let me select this item.", "I printed the label, which courier takes it?",
               "Where do I post it back? The refund can wait.", "How do I return it? I'll sort out a replacement myself.",
               "I want to send it back, what do I put in the parcel?", "What's the process to return an item, and is there a fee?"],
    "exchange": ["Can I swap it for a bigger size?", "I'd like the same one in black instead.",
                 "Can you send me a medium and I'll send the small back?", "I want to exchange it for the newer model.",
                 "Could I trade it for a different colour?", "Please replace it with the right size.",
                 "Can I change it for another one of the same price?", "I need the size 10 instead of the 9.",
                 "Can you send a replacement for the faulty one?", "I'd rather have the grey version, can we swap?",
                 "Is an exchange possible for a larger one?", "Swap it for the model with the longer cable please.",
                 "I want to return it and get the right size instead.", "Instead of a refund, send me the blue one.",
                 "Can I send it back and have the correct one sent out?", "I'll return this one if you ship the large."],
    "login": ["I can't sign in, it just says something went wrong.", "The login page keeps loading forever.",
              "My account says it is locked after I tried to log in.", "I get 'user not found' when I log in.",
              "The app logs me out straight after I sign in.", "I enter my details and nothing happens.",
              "It says my account is disabled when I try to log in.", "Sign in with Google just loops back to the start.",
              "I can't get past the login screen since the update.", "It says 'session expired' every time I log in.",
              "Login fails with error 403.", "I'm sure my details are right but it won't let me in.",
              "I reset my password and still can't log in, it just spins.", "After the code step it sends me back to the login page.",
              "I can log in on my phone but not on the website.", "It won't let me sign in even with the right password."],
    "password_reset": ["I need to reset my password.", "The password reset link in the email has expired.",
                       "I never get the reset password email.", "I forgot my password, how do I set a new one?",
                       "The new password I chose is rejected as too weak.", "The reset link says it is invalid.",
                       "How do I change my password?", "I reset it twice and the new password still doesn't work.",
                       "Can you send me a link to make a new password?", "The 'forgot password' button does nothing.",
                       "I want to change my password because I think someone knows it.",
                       "It asks for my old password to set a new one but I don't remember it.",
                       "I can't log in because I forgot the password, can you reset it?", "Where do I go to pick a new password?",
                       "The reset email came but the link opens the login page.", "I need a new password, the old one was leaked."],
    "two_factor": ["The verification code never arrives by text.", "My authenticator app codes are always rejected.",
                   "I changed phones and lost my two-factor codes.", "The six-digit code says it is expired.",
                   "How do I turn off two-step verification?", "I don't get the security code on my new number.",
                   "I lost my backup codes for 2FA.", "The one-time code comes after it has already timed out.",
                   "Can I get the sign-in code by email instead of SMS?", "It asks for a 2FA code I never set up.",
                   "The code from the authenticator says invalid.", "I need to move my 2-step verification to a new phone.",
                   "I can't log in because the code never comes.", "My password works but then it wants a code I don't get.",
                   "The text with the login code goes to my old number.", "After the password it asks for a code and says it's wrong."],
    "late_delivery": ["It still hasn't arrived and it was due days ago.", "When will it actually get here?",
                      "The delivery date keeps moving back.", "It's been stuck 'in transit' for a week.",
                      "I paid for next-day delivery and it's still not here.", "It was meant to come by Friday, it's late.",
                      "Tracking says delayed, how much longer?", "Is it still on its way? It's overdue.",
                      "The estimated delivery has passed and nothing yet.", "Can you chase the courier, it's taking forever.",
                      "It's still at the depot, when will it be delivered?", "It's later than promised, any update?",
                      "It was sent to the right address but it's days late.", "It hasn't turned up yet, is it delayed?",
                      "Tracking still shows it on the way, way past the date.", "The courier keeps rescheduling the delivery."],
    "lost_parcel": ["Tracking says delivered but there's nothing here.", "I think the parcel is lost.",
                    "The courier says it was delivered but I never got it.", "The parcel has disappeared from tracking.",
                    "It was marked as delivered to a safe place, but it is not there.", "My neighbours don't have it either, it's gone.",
                    "The photo proof of delivery shows a door that isn't mine.", "The box arrived empty.",
                    "The tracking stopped a week ago and the courier can't find it.", "It says signed for, but nobody here signed.",
                    "The parcel never turned up and tracking shows delivered.", "The courier admits they lost it.",
                    "It was delivered somewhere but not to me, the address on it is right.", "It never arrived and now tracking says returned to sender.",
                    "It's not late, it's gone: delivered three days ago and not here.", "Someone took it from the doorstep, it says delivered."],
    "wrong_address": ["I put the wrong address on the order, can you change it?", "It's going to my old address.",
                      "I need to update the delivery address before it ships.", "The label has the wrong postcode.",
                      "It was sent to my work address instead of home.", "The flat number on the label is wrong.",
                      "Please redirect it to my new address.", "The address autocompleted to the wrong street.",
                      "Can I change where it's being delivered?", "It shows my billing address instead of delivery.",
                      "I moved last month and forgot to update the address.", "Please change the house number on it.",
                      "It's going to be late because it went to my old address.", "Tracking shows it delivered to an address I left last year.",
                      "Can the courier deliver to my neighbour's address instead?", "I typed my street wrong, will it still arrive?"],
}

# Denials of an intent, keyed by the intent they deny. A text of one class denies one of its siblings:
# every denial shows up in two classes, and never in the class whose words it uses.
NOT = {
    "refund": ["I don't want a refund.", "I'm not after my money back.", "Please don't refund me.",
               "The refund is not what I'm asking about."],
    "return": ["I don't want to send it back.", "I'm not returning it.", "No return label needed.",
               "Returning it is not the question."],
    "exchange": ["I don't want a replacement or a different size.", "I'm not looking to swap it for another one.",
                 "No exchange please.", "A different colour won't help."],
    "login": ["Logging in is not the problem.", "I can sign in fine otherwise.", "My account isn't locked.",
              "The login itself works."],
    "password_reset": ["My password is definitely right, no reset needed.", "I'm not asking for a password reset.",
                       "I don't need a new password.", "The password is fine."],
    "two_factor": ["The verification code part works fine.", "2FA is not the issue, the code arrives.",
                   "The text codes come through fine.", "The two-factor step is OK."],
    "late_delivery": ["It isn't just late.", "It's not a delay.", "It arrived on time, that's not it.",
                      "The delivery date isn't the issue."],
    "lost_parcel": ["It isn't lost, tracking shows it moving.", "Nothing is lost.", "It hasn't been marked delivered.",
                    "The parcel is not missing."],
    "wrong_address": ["The address on it is correct.", "Nothing is wrong with the delivery address.",
                      "The address was right.", "I checked the address, it's fine."],
}
MAILS = ["gmail.com", "outlook.com", "yahoo.com", "icloud.com", "proton.me"]


def typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]   # swap two letters
    if kind == 1:
        return word[:i] + word[i + 1:]                           # drop one
    return word[:i] + word[i] + word[i:]                         # double one


def noisy(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    for _ in range(rng.choice([1, 1, 2])):
        j = rng.randrange(len(words))
        if len(words[j]) > 3 and words[j].isalpha():
            words[j] = typo(words[j], rng)
    return " ".join(words)


def generate(n_per_class: int = 60, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    for label, intents in INTENTS.items():
        count = 0
        while count < n_per_class:
            fam = FAMILY[label]
            # one context in six comes from another family: family words are a hint, not the answer
            ctx_fam = rng.choice([f for f in CONTEXT if f != fam]) if rng.random() < 1 / 6 else fam
            ctx = rng.choice(CONTEXT[ctx_fam]).format(
                item=rng.choice(ITEMS), day=rng.choice(DAYS), n=rng.randint(10000, 99999),
                device=rng.choice(DEVICES), device2=rng.choice(DEVICES), mail=rng.choice(MAILS))
            parts = [rng.choice(OPENERS), ctx, rng.choice(intents)]
            if rng.random() < 0.6:
                parts.insert(rng.choice([1, 2, 3]), rng.choice(FILLER).format(n=rng.randint(100000, 999999)))
            if rng.random() < 0.6:
                sibling = rng.choice([c for c in INTENTS if FAMILY[c] == fam and c != label])
                parts.insert(rng.choice([len(parts) - 1, len(parts)]), rng.choice(NOT[sibling]))
            parts.append(rng.choice(CLOSERS))
            if parts[0].endswith(",") and not parts[1].startswith(("I ", "I'")):
                parts[1] = parts[1][0].lower() + parts[1][1:]  # "Hi, this is ..." (but "Hi, I ...")
            text = " ".join(p for p in parts if p)
            if rng.random() < 0.3:
                text = noisy(text, rng)
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
